"""Two GPU speed settings of the training loop, checked on the CPU.

`train.allow_tf32: true` lets float32 matmuls run in TF32 on Ampere and later GPUs (diffusers'
scripts' `--allow_tf32`; off by default, as there; cuDNN's convolutions already may, torch's
default); nothing set it before. And the training DataLoader pins its batches' memory when the
run is on CUDA with loader workers (pinned in the loader's own thread), and only then: a CPU
run builds it as before.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusion_helpers import config_with, read_metrics, save_tiny, tiny_config

from mmalign.config import ConfigError, from_dict
from mmalign.diffusion.recipe import DiffusionRecipe
from mmalign.train import Config
from mmalign.train.loop import train


class _Stop(Exception):
    """Raised by the DataLoader spy: the test has what it needs."""


class _Recipe:
    """Just enough of a recipe for the loop to reach its DataLoader."""

    def __init__(self, cfg: Config, accelerator: Any):
        self.model = torch.nn.Linear(2, 2)
        self.dataset = list(range(8))

    def collate(self, items: list[Any]) -> Any:
        return items

    def describe(self) -> dict[str, Any]:
        return {}


def _config(tmp_path, **train_keys: Any) -> Config:
    return tiny_config("unused-model", tmp_path / "run", train=train_keys)


@pytest.fixture
def tf32_flags():
    """The process-wide TF32 flags, restored after the test."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _loader_kwargs(monkeypatch, cfg: Config, device: str) -> dict[str, Any]:
    """The keyword arguments the loop builds its DataLoader with, its accelerator on
    `device` (stood in for: no model or tensor goes there)."""
    import accelerate

    seen: dict[str, Any] = {}

    class Accelerator(accelerate.Accelerator):
        @property
        def device(self) -> torch.device:
            return torch.device(device)

        def prepare(self, *args: Any) -> Any:
            return args

    def loader(dataset: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(accelerate, "Accelerator", Accelerator)
    monkeypatch.setattr(torch.utils.data, "DataLoader", loader)
    with pytest.raises(_Stop):
        train(cfg, _Recipe)
    return seen


def test_allow_tf32_is_off_by_default_and_a_bool():
    raw = {"model": {"name_or_path": "m"}, "data": {"path": "d", "split": "s"}}
    assert from_dict(Config, raw).train.allow_tf32 is False
    with pytest.raises((ConfigError, TypeError, ValueError)):
        config_with(raw, {"train": {"allow_tf32": "maybe"}})


def test_allow_tf32_sets_the_matmul_flag_only(tmp_path, monkeypatch, tf32_flags):
    """As diffusers' --allow_tf32: matmuls; cuDNN's flag is torch's default (on) and a user who
    turned it off keeps it off."""
    _loader_kwargs(monkeypatch, _config(tmp_path, allow_tf32=True), "cpu")
    assert torch.backends.cuda.matmul.allow_tf32 is True
    assert torch.backends.cudnn.allow_tf32 is False  # the fixture's setting, left alone


def test_without_allow_tf32_the_flags_are_left_alone(tmp_path, monkeypatch, tf32_flags):
    _loader_kwargs(monkeypatch, _config(tmp_path), "cpu")
    assert torch.backends.cuda.matmul.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 is False


def test_allow_tf32_trains_the_same_on_the_cpu(tmp_path, tf32_flags):
    model = save_tiny(tmp_path)
    plain = tmp_path / "plain"
    train(tiny_config(model, plain, train={"max_steps": 2}), DiffusionRecipe)
    tf32 = tmp_path / "tf32"
    train(tiny_config(model, tf32, train={"max_steps": 2, "allow_tf32": True}), DiffusionRecipe)
    assert [m["loss"] for m in read_metrics(plain)] == [m["loss"] for m in read_metrics(tf32)]


@pytest.mark.parametrize(
    ("device", "workers", "pinned"), [("cuda", 2, True), ("cuda", 0, False), ("cpu", 2, False)]
)
def test_the_training_loader_pins_memory_on_cuda_with_workers(
    tmp_path, monkeypatch, device, workers, pinned
):
    """Pinned by the loader's thread beside its workers; with none, pinning would be one more
    copy in the training thread (nothing copies non-blocking)."""
    cfg = _config(tmp_path)
    cfg.data.num_workers = workers
    assert _loader_kwargs(monkeypatch, cfg, device).get("pin_memory", False) is pinned
