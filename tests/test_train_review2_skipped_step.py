"""A step the fp16 grad scaler skips leaves the LR schedule where it was.

With train.mixed_precision: fp16, a step whose gradients overflow (inf / NaN while the loss is
finite) is skipped by the GradScaler; the loop still stepped the schedule, so every later step
ran at the next step's rate (a warmup ended early, a decay ran ahead). The loop now steps the
schedule only when the optimizer stepped (accelerate's `optimizer_step_was_skipped`).

accelerate gives no scaler on a CPU, so the test hands the accelerator a real
`torch.amp.GradScaler("cpu")`: the loss is scaled, the gradients unscaled and checked, and the
step skipped by the scaler itself, as on a GPU.
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from test_train_review_resume import LinearRecipe, _config, _metrics

from mmalign.train.loop import train

SKIPPED = 2  # the step whose gradient overflows


class OverflowRecipe(LinearRecipe):
    """The linear recipe, with step SKIPPED's weight gradient made infinite (its loss finite),
    as an fp16 overflow in the backward pass does."""

    def __init__(self, cfg, accelerator):
        super().__init__(cfg, accelerator)
        self.backwards = 0
        self.model.weight.register_hook(self._overflow)

    def _overflow(self, grad: torch.Tensor) -> torch.Tensor:
        self.backwards += 1
        return torch.full_like(grad, math.inf) if self.backwards == SKIPPED else grad


@pytest.fixture
def grad_scaler(monkeypatch):
    """Every Accelerator the loop makes gets a CPU GradScaler (as fp16 gets one on a GPU)."""
    from accelerate import Accelerator

    made = []
    original = Accelerator.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.scaler = torch.amp.GradScaler("cpu")
        made.append(self.scaler)

    monkeypatch.setattr(Accelerator, "__init__", init)
    return made


def _weights(out, step):
    return load_file(str(out / "checkpoints" / f"checkpoint-{step}" / "trainable.safetensors"))


def test_a_skipped_step_does_not_advance_the_schedule(tmp_path, grad_scaler):
    out = tmp_path / "run"
    settings = {"lr_scheduler": "constant_with_warmup", "warmup_steps": 4, "max_steps": 6,
                "checkpoint_every": 1, "checkpoint_total_limit": None}  # fmt: skip
    train(_config(out, **settings), OverflowRecipe)
    # the scaler skipped step 2: its weights are step 1's, and it backed off its scale
    assert all(_weights(out, 1)[k].equal(_weights(out, 2)[k]) for k in _weights(out, 1))
    assert any(not _weights(out, 2)[k].equal(_weights(out, 3)[k]) for k in _weights(out, 1))
    assert grad_scaler[0].get_scale() == 2.0**15
    # the warmup (rate step/4 of 1e-2) resumes after the skipped step where it stopped
    lrs = [_metrics(out)[s]["lr"] for s in range(1, 7)]
    assert lrs == pytest.approx([0.0, 0.25e-2, 0.25e-2, 0.5e-2, 0.75e-2, 1e-2], abs=1e-12)
    schedule = torch.load(out / "checkpoints" / "checkpoint-6" / "scheduler.pt")
    assert schedule["last_epoch"] == 5  # 6 steps, one skipped


def test_without_an_overflow_every_step_advances_the_schedule(tmp_path, grad_scaler):
    out = tmp_path / "run"
    settings = {"lr_scheduler": "constant_with_warmup", "warmup_steps": 4, "max_steps": 6}
    train(_config(out, **settings), LinearRecipe)
    lrs = [_metrics(out)[s]["lr"] for s in range(1, 7)]
    assert lrs == pytest.approx([0.0, 0.25e-2, 0.5e-2, 0.75e-2, 1e-2, 1e-2], abs=1e-12)
    assert grad_scaler[0].get_scale() == 2.0**16
