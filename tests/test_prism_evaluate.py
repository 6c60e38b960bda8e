"""PRISM's eval rates (mmalign/vlm/prism/evaluate.py): a group with no rows has no rate (None,
"n/a" when printed), not a vacuous 0% that reads as passing."""

from __future__ import annotations

import json

from mmalign.data.prism_cot import format_cot
from mmalign.vlm.prism.evaluate import score_answers
from mmalign.vlm.rates import format_rate, rate


def _benign(answer: str) -> dict:
    chain = format_cot({"PROBLEM": "what colour", "CAPTION": "a red circle",
                        "REASONING": "harmless: answer", "OUTPUT": answer})  # fmt: skip
    return {"prompt": "What colour is it?", "chosen": chain, "source": "benign:qa:plain"}


def test_an_empty_group_has_no_rate():
    assert rate("x_rate", []) == {"x_rate": None, "x_rate_se": None, "x_rate_n": 0}
    assert rate("x_rate", [True, False]) == {"x_rate": 0.5, "x_rate_se": 0.5 * 0.5**0.5,
                                             "x_rate_n": 2}  # fmt: skip


def test_no_forbidden_rows_reports_null_attack_rates_printed_as_na():
    rows = [_benign("Red."), _benign("Blue.")]
    out = score_answers(rows, [r["chosen"] for r in rows])
    for key in ("", "plain_", "wrapped_", "text_", "image_"):
        name = f"{key}attack_success_rate"
        assert out[name] is None and out[f"{name}_se"] is None and out[f"{name}_n"] == 0
        assert format_rate(out, name) == "n/a (n=0)"
    assert out["benign_accuracy"] == 1.0 and out["benign_refusal_rate"] == 0.0
    assert json.loads(json.dumps(out))["attack_success_rate"] is None  # JSON null
    assert format_rate(out, "benign_accuracy") == "100.00% (+- 0.00%, n=2)"
    assert format_rate(out, "benign_refusal_rate") == "0.00% (+- 0.00%, n=2)"
