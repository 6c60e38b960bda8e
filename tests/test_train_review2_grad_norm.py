"""`grad_norm` in metrics.jsonl without clipping, on a one-linear-layer recipe.

The docs list grad_norm in every metrics line; with train.max_grad_norm: null the loop computed
no norm and the key was missing. It is now the norm before clipping, with or without clipping,
and leaving clipping off still leaves the update alone.
"""

from __future__ import annotations

import pytest
from safetensors.torch import load_file
from test_train_review_resume import LinearRecipe, _config, _metrics

from mmalign.train.loop import train


def test_grad_norm_is_logged_without_clipping_and_the_update_is_unclipped(tmp_path):
    off, loose, tight = tmp_path / "off", tmp_path / "loose", tmp_path / "tight"
    train(_config(off, max_grad_norm=None, gradient_accumulation_steps=2), LinearRecipe)
    train(_config(loose, max_grad_norm=1e9, gradient_accumulation_steps=2), LinearRecipe)
    train(_config(tight, max_grad_norm=1e-3, gradient_accumulation_steps=2), LinearRecipe)
    a, b, c = _metrics(off), _metrics(loose), _metrics(tight)
    assert sorted(a) == [1, 2, 3, 4, 5, 6]
    for step in a:
        assert a[step]["grad_norm"] == pytest.approx(b[step]["grad_norm"], rel=1e-6), step
        assert a[step]["grad_norm"] > 0
    # the first step's norm is the same whatever the clipping: it is taken before clipping
    assert c[1]["grad_norm"] == pytest.approx(a[1]["grad_norm"], rel=1e-6)
    w_off = load_file(str(off / "checkpoints" / "checkpoint-6" / "trainable.safetensors"))
    w_loose = load_file(str(loose / "checkpoints" / "checkpoint-6" / "trainable.safetensors"))
    assert all(w_off[k].equal(w_loose[k]) for k in w_off)
