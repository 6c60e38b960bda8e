"""`dense_eval.json` is strict JSON (an undefined metric is null, not NaN), and a PPD
evaluation's saved images are keyed by each user embedding's values, not their sum."""

from __future__ import annotations

import json

import torch

from mmalign.eval.dense import finite_or_null
from mmalign.eval.ppd_winrate import embedding_digest


def _strict(text: str):
    def refuse(name: str):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_undefined_metrics_are_null_in_strict_json():
    result = {"artifact": {"cc": float("nan"), "mse": 0.01}, "scores": [1.0, float("inf")],
              "n": 3, "name": "dense:x"}  # fmt: skip
    parsed = _strict(json.dumps(finite_or_null(result)))
    assert parsed == {"artifact": {"cc": None, "mse": 0.01}, "scores": [1.0, None], "n": 3,
                      "name": "dense:x"}  # fmt: skip


def test_an_embedding_changed_with_the_same_sum_gets_another_key():
    e = torch.tensor([1.0, 2.0, 3.0, 4.0])
    swapped = torch.tensor([2.0, 1.0, 3.0, 4.0])  # the same sum, other values
    assert float(e.sum()) == float(swapped.sum())
    assert embedding_digest(e) != embedding_digest(swapped)
    assert embedding_digest(e) == embedding_digest(e.clone().float())  # values alone decide
