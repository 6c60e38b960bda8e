"""Review 8: `mmalign data diagnose` on diffusion pairs and `mmalign eval accuracy` (with
`--scorer`, and with `--model`: the implicit reward) printed counts without `words.plural`:
"1 pairs", "1 tied labels", "1 rows skipped", "1 draws each"."""

from __future__ import annotations

from mmalign.eval.accuracy import describe_accuracy
from mmalign.eval.diagnose_diffusion import summary_line
from mmalign.eval.implicit import describe_implicit


def test_diagnose_diffusion_line() -> None:
    one = summary_line({"pairs": 1, "tied_labels": 1, "ranking_accuracy": 1.0})
    assert one.startswith("1 diffusion pair (1 tied label left out); ranking accuracy 100.0%.")
    two = summary_line({"pairs": 2, "tied_labels": 0, "ranking_accuracy": 0.5,
                        "implicit_accuracy": 0.25})  # fmt: skip
    assert two.startswith("2 diffusion pairs (0 tied labels left out); ranking accuracy 50.0%, "
                          "implicit accuracy 25.0%.")  # fmt: skip


def _accuracy(n: int) -> dict:
    return {"scorer": "toy:fidelity", "data": "pickapic:test", "accuracy": 0.5,
            "threshold": 0.0, "pairs": 2 * n, "tied_labels": n, "skipped": n,
            "accuracy_no_ties": 0.5, "accuracy_untied": 1.0}  # fmt: skip


def test_eval_accuracy_scorer_line() -> None:
    one = describe_accuracy(_accuracy(1))
    assert "; 2 pairs, 1 tied label, 1 row skipped);" in one
    assert "100.0% on the 1 pair without a tied label" in one
    two = describe_accuracy(_accuracy(2))
    assert "; 4 pairs, 2 tied labels, 2 rows skipped);" in two
    assert "on the 2 pairs without a tied label" in two


def test_eval_accuracy_model_line() -> None:
    result = {"model": "run", "base": "toy:sd", "data": "toy:pairs", "implicit_accuracy": 1.0,
              "pairs": 1, "draws": 1, "ties_left_out": 1, "skipped": 1}  # fmt: skip
    assert describe_implicit(result).endswith(
        "accuracy 100.0% (1 pair, 1 draw each; 1 tie left out, 1 row skipped)"
    )
    more = {**result, "pairs": 3, "draws": 2, "ties_left_out": 0, "skipped": 2}
    assert describe_implicit(more).endswith("(3 pairs, 2 draws each; 0 ties left out, 2 rows "
                                            "skipped)")  # fmt: skip
