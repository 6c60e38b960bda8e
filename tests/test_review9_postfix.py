"""The progress bar shows a preference term's accuracy and margin, never an `sft` term's: a
dense reward head (only `sft`-style MSE terms, no rejected side) showed `acc=0.00` and a
negative margin, which read as a failing run."""

from __future__ import annotations

from mmalign.train.reporting import progress_postfix


def test_sft_terms_stay_out_of_the_progress_bar() -> None:
    reward = {"loss": 0.44, "heatmap/sft/accuracy": 0.0, "heatmap/sft/margin": -0.25}
    assert progress_postfix(reward) == {"loss": "0.4400"}
    mixed = {"loss": 0.7, "main/sft/accuracy": 0.0, "main/dpo/accuracy": 0.75,
             "main/dpo/margin": 1.5}  # fmt: skip
    assert progress_postfix(mixed) == {"loss": "0.7000", "acc": "0.75", "margin": "1.5"}
