"""A checkpoint written by a CUDA run holds optimizer tensors tagged `cuda:0` (AdamW's moments
live beside the parameters). `torch.load` without `map_location` restores each tensor to the
device it was saved from: a resume on a process without CUDA then fails ("Attempting to
deserialize object on a CUDA device"), and under `accelerate launch` every process loads the
main process's moments onto `cuda:0` first. `load_checkpoint` reads them onto the CPU and
`optimizer.load_state_dict` moves each state to its parameter's device.

No GPU here: the files are written with torch's location tag replaced by `cuda:0`, exactly as
a CUDA run's `torch.save` tags them.
"""

from __future__ import annotations

import pytest
import torch

from mmalign.train import checkpoint as ckpt


def _train_one_step(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.randn(2, 4)).pow(2).sum().backward()
    optimizer.step()
    scheduler.step()
    return model, optimizer, scheduler


def _save_as_cuda(monkeypatch, out_dir, step, model, optimizer, scheduler) -> None:
    """`save_checkpoint` as a CUDA run writes it: every torch.save'd tensor tagged cuda:0."""
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        ckpt.save_checkpoint(out_dir, step, model, optimizer, scheduler,
                             rng_states=[ckpt.rng_state()])  # fmt: skip


def test_the_fake_tags_what_a_cuda_run_writes(tmp_path, monkeypatch):
    """The premise: without map_location, this process cannot read such a file."""
    model, optimizer, scheduler = _train_one_step()
    _save_as_cuda(monkeypatch, tmp_path, 1, model, optimizer, scheduler)
    path = tmp_path / "checkpoints" / "checkpoint-1" / "optimizer.pt"
    if torch.cuda.is_available():
        pytest.skip("this process has CUDA: the tag is readable here")
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(path, weights_only=True)


def test_a_cuda_checkpoint_resumes_on_a_cpu_process(tmp_path, monkeypatch):
    model, optimizer, scheduler = _train_one_step()
    _save_as_cuda(monkeypatch, tmp_path, 1, model, optimizer, scheduler)
    saved = {k: {n: v.clone() for n, v in s.items() if torch.is_tensor(v)}
             for k, s in optimizer.state_dict()["state"].items()}  # fmt: skip

    fresh, fresh_opt, fresh_sched = _train_one_step(seed=1)
    path = tmp_path / "checkpoints" / "checkpoint-1"
    step = ckpt.load_checkpoint(path, fresh, fresh_opt, fresh_sched)
    assert step == 1
    assert ckpt.load_rng_state(path, 0)
    state = fresh_opt.state_dict()["state"]
    for k, tensors in saved.items():
        for name, value in tensors.items():
            got = state[k][name]
            assert got.device == torch.device("cpu"), (k, name, got.device)
            assert torch.equal(got, value), (k, name)
    for p, q in zip(fresh.parameters(), model.parameters(), strict=True):
        assert torch.equal(p, q)
