"""The CUDA part of a checkpoint's random states (`rng.pt`), run with fake CUDA calls.

No GPU here: `torch.cuda` is replaced by fakes that keep one generator state per device and a
current device per "process", as `accelerate launch` sets it (one GPU a process). A save then
a restore must give every process its own device's state back. A checkpoint saved with CUDA
states and resumed by a process without CUDA restores the CPU, numpy and python states and
says, by a warning naming the file, that the CUDA ones were left out: the CUDA generator only
drives draws on a CUDA device, which that process makes none of, so refusing would block a
legitimate resume on other hardware; but the continuation is not the unbroken run's, and that
is not kept quiet. The same holds the other way (a CUDA process, a checkpoint without them).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from mmalign.train.checkpoint import load_rng_state, rng_state, save_checkpoint


class FakeCuda:
    """Per-device generator states, a current device, and a log of the calls."""

    def __init__(self, devices: int):
        self.states = {i: torch.full((16,), 10 + i, dtype=torch.uint8) for i in range(devices)}
        self.current = 0
        self.calls: list[tuple[str, int]] = []

    def index(self, device: int | str | torch.device = "cuda") -> int:
        device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        assert device.type == "cuda", device
        return self.current if device.index is None else device.index

    def get_rng_state(self, device: int | str | torch.device = "cuda") -> torch.Tensor:
        i = self.index(device)
        self.calls.append(("get", i))
        return self.states[i].clone()

    def set_rng_state(self, state: torch.Tensor, device: int | str | torch.device = "cuda"):
        i = self.index(device)
        self.calls.append(("set", i))
        assert state.dtype == torch.uint8 and state.device.type == "cpu"
        self.states[i] = state.clone()

    def install(self, monkeypatch: pytest.MonkeyPatch, available: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: available)
        monkeypatch.setattr(
            torch.cuda, "device_count", lambda: len(self.states) if available else 0
        )
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get_rng_state)
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set_rng_state)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [
            self.get_rng_state(i) for i in range(len(self.states))])  # fmt: skip
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: [
            self.set_rng_state(s, i) for i, s in enumerate(states)])  # fmt: skip


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _save_two_processes(tmp_path, fake: FakeCuda):
    """checkpoint-1 with the random states of processes 0 and 1, each on its own GPU."""
    states = []
    for rank in (0, 1):
        fake.current = rank
        states.append(rng_state())  # what each process hands to gather_object
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return save_checkpoint(tmp_path, 1, model, optimizer, scheduler, rng_states=states)


def test_each_process_gets_its_own_devices_state_back(tmp_path, monkeypatch):
    fake = FakeCuda(devices=2)
    fake.install(monkeypatch)
    fake.states = {0: torch.arange(16, dtype=torch.uint8), 1: torch.arange(16, 32).byte()}
    saved = {i: s.clone() for i, s in fake.states.items()}
    path = _save_two_processes(tmp_path, fake)
    assert ("get", 0) in fake.calls and ("get", 1) in fake.calls
    fake.states = {i: torch.zeros(16, dtype=torch.uint8) for i in (0, 1)}  # the run went on
    fake.calls.clear()
    for rank in (1, 0):  # each process restores its own entry, on its own current device
        fake.current = rank
        assert load_rng_state(path, rank)
    assert fake.calls == [("set", 1), ("set", 0)]
    for i in (0, 1):
        assert torch.equal(fake.states[i], saved[i]), i


def test_cuda_states_on_a_cpu_only_process_restore_the_rest_and_say_so(tmp_path, monkeypatch):
    fake = FakeCuda(devices=2)
    fake.install(monkeypatch)
    _seed(5)
    path = _save_two_processes(tmp_path, fake)
    _seed(5)  # the saved states again (saving drew a Linear's initial weights)
    expect = (torch.rand(3), np.random.rand(3), random.random())
    cpu_only = FakeCuda(devices=0)
    cpu_only.install(monkeypatch, available=False)
    _seed(6)
    with pytest.warns(UserWarning, match=r"rng\.pt.*CUDA") as record:
        assert load_rng_state(path, 0)
    assert str(path / "rng.pt") in str(record[0].message)
    assert cpu_only.calls == []  # nothing was set on a device this process does not have
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expect[0], got[0])
    assert np.array_equal(expect[1], got[1]) and expect[2] == got[2]


def test_a_cuda_process_resuming_states_without_cuda_says_so(tmp_path, monkeypatch):
    cpu_only = FakeCuda(devices=0)
    cpu_only.install(monkeypatch, available=False)
    path = _save_two_processes(tmp_path, cpu_only)
    assert "cuda" not in torch.load(path / "rng.pt", weights_only=True)[0]
    fake = FakeCuda(devices=1)
    fake.install(monkeypatch)
    with pytest.warns(UserWarning, match=r"rng\.pt.*no CUDA"):
        assert load_rng_state(path, 0)
    assert fake.calls == []


def test_a_matching_resume_is_quiet(tmp_path, monkeypatch, recwarn):
    fake = FakeCuda(devices=2)
    fake.install(monkeypatch)
    path = _save_two_processes(tmp_path, fake)
    fake.current = 0
    assert load_rng_state(path, 0)
    assert not [w for w in recwarn if "rng.pt" in str(w.message)]
    assert fake.calls[-1] == ("set", 0)
