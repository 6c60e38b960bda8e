"""Gradient accumulation against one big batch, on a one-linear-layer recipe: k micro-batches
of B pairs make the update (and the logged loss, grad_norm and lr) of one batch of k*B pairs,
clipping included (checked in review; no defect found)."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file
from test_train_review_resume import LinearRecipe, _config, _metrics

from mmalign.train.loop import train


def test_accumulated_micro_batches_update_as_one_batch(tmp_path):
    common = {"max_steps": 4, "max_grad_norm": 0.05, "weight_decay": 0.1,
              "lr_scheduler": "linear", "warmup_steps": 1}  # fmt: skip
    runs = {(4, 1): tmp_path / "one", (2, 2): tmp_path / "two", (1, 4): tmp_path / "four"}
    for (batch, k), out in runs.items():
        train(_config(out, batch_size=batch, gradient_accumulation_steps=k, **common), LinearRecipe)
    one = load_file(str(runs[4, 1] / "checkpoints" / "checkpoint-4" / "trainable.safetensors"))
    base = _metrics(runs[4, 1])
    for out in (runs[2, 2], runs[1, 4]):
        w = load_file(str(out / "checkpoints" / "checkpoint-4" / "trainable.safetensors"))
        for key in one:
            assert (w[key] - one[key]).abs().max().item() <= 1e-6, key
        m = _metrics(out)
        for step in base:
            for key in ("loss", "grad_norm", "lr", "main/dpo/accuracy"):
                assert m[step][key] == pytest.approx(base[step][key], abs=1e-6), (step, key)
