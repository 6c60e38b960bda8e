"""Preference accuracy of a reward scorer on human-labelled pairs, with PickScore's tie protocol.

Kirstain et al. 2023 (Pick-a-Pic, section 5): the scorer predicts a tie when its two scores
differ by at most a threshold t, tuned on the validation split; a prediction scores 1 when it
matches the human label (left, right or tie), 0.5 when exactly one of the two is a tie, and 0
when it picks the other image. With t = 0 and no tied labels this is plain pairwise accuracy.

Besides `accuracy` (at the tuned t) the result has two forced-choice numbers, which the paper
does not report: `accuracy_no_ties`, the same protocol at t = 0, where the scorer never
predicts a tie (only exactly equal scores are one) and each labelled tie still scores 0.5
against its pick (the key's name is kept for readers of older results: it is not accuracy with
the tied pairs left out); and `accuracy_untied`, that forced choice over the pairs whose label
is not a tie (plain pairwise accuracy; None when every label is a tie).

Data: `pickapic:<split>` (a local v2 folder, `$MMALIGN_PICKAPIC`, or the hub) or a toy
dataset `toy:<kind>[:N]` (built from toy-sd samples; the validation set uses another seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.prompts import PICKAPIC_FLAG, pickapic_key, pickapic_source
from ..words import plural

VALIDATION = {"test": "validation", "test_unique": "validation_unique"}


def outcome_scores(diff: torch.Tensor, label: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per pair: 1, 0.5 or 0 under the tie protocol. `diff` = score(chosen) - score(rejected),
    `label` = P(chosen preferred): 1, 0.5 for a human tie, or below 0.5 where the human
    preferred the `rejected` image (a saved pair dataset's label 0): the prediction is right
    when the scorer prefers the image the human did."""
    predicted_tie = diff.abs() <= threshold
    human_tie = (label - 0.5).abs() < 1e-6
    right = ~predicted_tie & ~human_tie & ((diff > 0) == (label > 0.5))
    both_tie = predicted_tie & human_tie
    one_tie = predicted_tie ^ human_tie
    return right.double() + both_tie.double() + 0.5 * one_tie.double()


def tune_threshold(diff: torch.Tensor, label: torch.Tensor) -> float:
    """The tie threshold with the best accuracy: 0, or one of the |diff| values (accuracy only
    changes there); the smallest of equal bests."""
    candidates = torch.cat([torch.zeros(1, dtype=diff.dtype), diff.abs().sort().values])
    best, best_t = -1.0, 0.0
    for t in candidates.unique().tolist():
        acc = float(outcome_scores(diff, label, t).mean())
        if acc > best + 1e-12:
            best, best_t = acc, t
    return best_t


def load_pairs(
    spec: str,
    *,
    pickapic_root: str | None = None,
    max_rows: int | None = None,
    split: str = "train",
    flag: str = "--data",
):
    """(rows with prompt, chosen, rejected, label; the skip report) for a data spec; `split`
    picks the split of a saved dataset folder; `flag` names the option in an error."""
    family, _, rest = spec.partition(":")
    if family == "pickapic":
        from ..data.pickapic import load_pickapic

        if not rest:
            raise ValueError("data pickapic: name the split, e.g. pickapic:test")
        # Ties stay (label 0.5): the protocol scores them. Messages name `--pickapic-root`, the
        # option of every command that reads this (eval accuracy, data diagnose)
        return load_pickapic(
            pickapic_source(pickapic_root), rest, tie_policy="half", max_rows=max_rows,
            key=pickapic_key(pickapic_root, PICKAPIC_FLAG),
        )  # fmt: skip
    if family == "toy":
        from ..diffusion.data import open_pairs

        kind, _, tail = rest.partition(":")
        seed = 0
        if tail:
            seed = int(tail)
        options: dict[str, Any] = {"n": max_rows or 128, "seed": seed}
        if kind == "pairs":
            options["ties"] = "keep"  # labelled 0.5: the protocol scores them
        return open_pairs(f"toy:{kind}", "train", toy_options=options)
    folder = Path(spec).expanduser()  # `~/pairs`: no shell expands it inside `--data=~/...`
    if folder.is_dir():  # a saved image-pair dataset (`save_to_disk`), as training reads
        from ..diffusion.data import open_pairs

        # ties stay (label 0.5) as for pickapic:<split>: the protocol scores them
        return open_pairs(str(folder), split, max_samples=max_rows, tie_policy="half")
    raise ValueError(unknown_data(spec, flag))


def unknown_data(spec: str, flag: str = "--data") -> str:
    """`--data` that names nothing: a folder that does not exist reads as a typo'd path, so the
    message says the folder is missing before listing the other spellings."""
    return (
        f"{flag} {spec!r}: no such dataset folder, and not pickapic:<split> or toy:<kind>[:seed]; "
        "give a saved pair dataset folder (`save_to_disk`) or one of those"
    )


def validation_spec(spec: str) -> str:
    """The split the threshold is tuned on: Pick-a-Pic's validation for its test, another seed
    for toy data."""
    family, _, rest = spec.partition(":")
    if family == "pickapic":
        if rest not in VALIDATION:
            raise ValueError(f"no validation split known for {spec}; pass --tune-on")
        return f"pickapic:{VALIDATION[rest]}"
    if family != "toy":
        if Path(spec).expanduser().is_dir():  # no split of it is known to be for tuning
            raise ValueError(
                f"--data {spec}: a dataset folder has no known validation split; tune the tie "
                "threshold on other data with --tune-on, or give it with --threshold"
            )
        raise ValueError(unknown_data(spec))
    kind, _, seed = rest.partition(":")
    return f"toy:{kind}:{int(seed or 0) + 1}"


def score_pairs(scorer, rows, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(score(chosen) - score(rejected), label) over all rows, in batches."""
    diffs, labels = [], []
    n = len(rows)
    for start in tqdm(range(0, n, batch_size), desc=f"score {scorer.name}", unit="batch"):
        batch = rows[start : start + batch_size]
        prompts: Sequence[str] = batch["prompt"]
        chosen = scorer.score(batch["chosen"], prompts)
        rejected = scorer.score(batch["rejected"], prompts)
        diffs.append((chosen - rejected).double())
        label = [1.0 if v is None else float(v) for v in batch["label"]]
        labels.append(torch.tensor(label, dtype=torch.float64))
    if not diffs:
        raise ValueError("no pairs to score")
    return torch.cat(diffs), torch.cat(labels)


def accuracy(
    scorer,
    data: str,
    *,
    tune_on: str | None = None,
    threshold: float | None = None,
    pickapic_root: str | None = None,
    max_rows: int | None = None,
    batch_size: int = 32,
    split: str = "train",
) -> dict[str, Any]:
    """The scorer's accuracy on `data` with the tie threshold tuned on `tune_on` (default: the
    validation split) or given as `threshold`. `split`: the split of `data` when it is a saved
    dataset folder (a `tune_on` folder is read at its train split)."""
    result: dict[str, Any] = {"scorer": scorer.name, "data": data}
    if Path(data).expanduser().is_dir():
        result["split"] = split
    if threshold is None:
        tune_on = tune_on or validation_spec(data)
        rows, report = load_pairs(
            tune_on, pickapic_root=pickapic_root, max_rows=max_rows, flag="--tune-on"
        )
        d, lab = score_pairs(scorer, rows, batch_size)
        threshold = tune_threshold(d, lab)
        result["tuned_on"] = {
            "data": tune_on, "pairs": len(lab), "skipped": report.num_skipped,
            "accuracy_at_threshold": float(outcome_scores(d, lab, threshold).mean()),
        }  # fmt: skip
    rows, report = load_pairs(data, pickapic_root=pickapic_root, max_rows=max_rows, split=split)
    diff, label = score_pairs(scorer, rows, batch_size)
    result.update(
        {
            "threshold": threshold,
            "accuracy": float(outcome_scores(diff, label, threshold).mean()),
            "accuracy_no_ties": float(outcome_scores(diff, label, 0.0).mean()),
            "accuracy_untied": _untied(diff, label),
            "pairs": len(label),
            "tied_labels": int(((label - 0.5).abs() < 1e-6).sum()),
            "skipped": report.num_skipped,
            "skip_reasons": dict(report.skipped),
        }
    )
    return result


def _untied(diff: torch.Tensor, label: torch.Tensor) -> float | None:
    """Forced-choice accuracy (t = 0) over the pairs whose label is not a tie."""
    untied = (label - 0.5).abs() >= 1e-6
    if not bool(untied.any()):
        return None
    return float(outcome_scores(diff[untied], label[untied], 0.0).mean())


def describe_accuracy(result: dict[str, Any]) -> str:
    """The line `mmalign eval accuracy --scorer` prints for an `accuracy` result."""
    tuned = result.get("tuned_on")
    where = f"tuned on {tuned['data']}" if tuned else "given"
    untied = result["pairs"] - result["tied_labels"]
    text = (
        f"{result['scorer']} on {result['data']}"
        + (f" (split {result['split']})" if "split" in result else "")
        + f": accuracy {result['accuracy']:.1%} "
        f"(tie threshold {result['threshold']:.4g}, {where}; {plural(result['pairs'], 'pair')}, "
        f"{plural(result['tied_labels'], 'tied label')}, "
        f"{plural(result['skipped'], 'row')} skipped); "
        f"forced choice (threshold 0, no predicted ties) {result['accuracy_no_ties']:.1%}"
    )
    if result.get("accuracy_untied") is not None and result["tied_labels"]:
        text += (
            f", {result['accuracy_untied']:.1%} on the {plural(untied, 'pair')} without a tied "
            "label"
        )
    return text
