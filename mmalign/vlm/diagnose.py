"""Per-pair preference-data diagnostics for VLMs: CHES, LN-CHES, ranking and implicit accuracy.

CHES (Razin et al., "Unintentional Unalignment: Likelihood Displacement in Direct Preference
Optimization", Definition 2) and its length-normalised form LN-CHES (Eq. 4 there) read the
model's last-layer hidden states h_t at the positions that predict the response tokens (the
last prompt token through the second-to-last response token; METHODS.md section 1):

    S+ = sum_t h_t(x, y+),  S- = sum_t h_t(x, y-)
    CHES    = <S+, S-> - ||S+||^2
    LN-CHES = <S+, S-> / (|y+| |y-|) - ||S+||^2 / |y+|^2

A high score marks a pair whose chosen and rejected answers look alike to the model: DPO on
it tends to lower the chosen answer's likelihood (likelihood displacement). |y| counts the
scored completion tokens, the end-of-turn token the chat template appends included, exactly
the tokens the training scorer sums (scorer.py).

Ranking accuracy (Chen et al., "Preference Learning Algorithms Do Not Learn Preference
Rankings", Section 3): a pair is ranked right when pi_c > pi_r, the summed completion
log-probs of the model, with no reference (a tie is a miss, as there). Implicit-reward
accuracy (DPO, Rafailov et al. 2023, Eq. 5's implicit reward): (pi_c - ref_c) - (pi_r - ref_r)
> 0, only with a reference; an exact tie counts half (`implicit_correct` 0.5), as in
`mmalign eval accuracy --model`. A pair labelled 0.5 (a tie in the labels) has no right order:
it stays in the table (CHES, filters) with `tied_label` set and no accuracy value, and the
accuracies are over the other pairs, as the diffusion diagnosis leaves such pairs out.

All of these are functions of per-pair states (S+, S-, |y+|, |y-| and the log-probs): one
model pass computes them, and a cache keyed by the weights, the pairs and the tokenization
(diagnose_states.py) serves every later diagnosis and `data.filter` of the same data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import InputError
from ..data.prism_files import SFT_ONLY
from ..data.schema import ValidationReport
from .collate import PairCollator, SequenceBatch, image_key, row_images
from .diagnose_states import (
    REFERENCE,
    PairStates,
    StatesKey,
    check_states,
    load_states,
    new_states,
    save_states,
)
from .scorer import VLMPairScorer, _core, completion_hidden, completion_logps, image_features


def ches_scores(s_chosen: torch.Tensor, s_rejected: torch.Tensor, n_chosen: torch.Tensor,
                n_rejected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(CHES, LN-CHES) per pair from the summed hidden states [B, H] and the lengths [B]
    (Razin et al., Definition 2 and Eq. 4)."""
    cross = (s_chosen * s_rejected).sum(-1)
    own = (s_chosen * s_chosen).sum(-1)
    n_c, n_r = n_chosen.to(cross.dtype), n_rejected.to(cross.dtype)
    return cross - own, cross / (n_c * n_r) - own / (n_c * n_c)


def hidden_sums(core: Any, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum of last-layer hidden states over the predicting positions [S, H] in float64,
    completion log-prob sums [S], completion tokens [S]) of every sequence, one forward."""
    features = image_features(core, batch)
    hidden, ids, scored = completion_hidden(core, batch, features)
    n = batch.input_ids.shape[0]
    h = hidden[scored.row, scored.source].double()
    sums = h.new_zeros(n, h.shape[-1]).index_add(0, scored.sequence, h)
    logps, counts = completion_logps(core, hidden, ids, scored, n)
    return sums, logps, counts


@torch.no_grad()
def batch_states(model: Any, batch: SequenceBatch,
                 reference: VLMPairScorer | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """The per-pair states of one batch (its `main` pairs), on the CPU: hidden-state sums,
    token counts and log-probs, and with `reference` its log-probs (diagnose_states.py)."""
    core = _core(model)
    sums, logps, counts = hidden_sums(core, batch)
    c, r = batch.pairs["main"]
    out = {"chosen_sum": sums[c], "rejected_sum": sums[r],
           "chosen_tokens": counts[c], "rejected_tokens": counts[r],
           "logp_chosen": logps[c], "logp_rejected": logps[r]}  # fmt: skip
    if reference is not None:
        ref = reference.reference_logps(model, batch)
        out["ref_chosen"], out["ref_rejected"] = ref[c], ref[r]
    # float64 log-probs hold the float32 values exactly: the columns do not change
    return {k: v.cpu().long() if k.endswith("tokens") else v.cpu().double()
            for k, v in out.items()}  # fmt: skip


def state_columns(t: dict[str, torch.Tensor]) -> dict[str, list[Any]]:
    """Per-pair columns from states (`batch_states` or a states file): lengths, log-probs,
    accuracies and CHES / LN-CHES; with reference log-probs, those and implicit accuracy."""
    lc, lr = t["logp_chosen"], t["logp_rejected"]
    ches, ln_ches = ches_scores(t["chosen_sum"], t["rejected_sum"], t["chosen_tokens"],
                                t["rejected_tokens"])  # fmt: skip
    out: dict[str, list[Any]] = {
        "chosen_tokens": t["chosen_tokens"].tolist(),
        "rejected_tokens": t["rejected_tokens"].tolist(),
        "logp_chosen": lc.tolist(),
        "logp_rejected": lr.tolist(),
        "ranking_correct": (lc > lr).tolist(),
        "ches": ches.tolist(),
        "ln_ches": ln_ches.tolist(),
    }
    if "ref_chosen" in t:
        rc, rr = t["ref_chosen"], t["ref_rejected"]
        out["ref_chosen"], out["ref_rejected"] = rc.tolist(), rr.tolist()
        out["implicit_correct"] = [_credit(m) for m in ((lc - rc) - (lr - rr)).tolist()]
    return out


def _credit(margin: float) -> float:
    """1 for a positive implicit margin, 0.5 for an exact tie, 0 below."""
    return 1.0 if margin > 0 else 0.5 if margin == 0 else 0.0


def _tied(label: Any) -> bool:
    """A label of 0.5: no preference, so no right order."""
    return label is not None and abs(float(label) - 0.5) <= 1e-6


def diagnose_batch(model: Any, batch: SequenceBatch,
                   reference: VLMPairScorer | None = None) -> dict[str, list[Any]]:  # fmt: skip
    """Per-pair columns of one batch (its `main` pairs): lengths, log-probs, accuracies and
    CHES / LN-CHES; with `reference`, the reference log-probs and implicit accuracy too."""
    return state_columns(batch_states(model, batch, reference))


def pair_key(row: Any) -> str:
    """Identity of a pair: prompt, answers and image pixels (duplicates share it)."""
    h = hashlib.blake2b(digest_size=12)
    for text in (row["prompt"], row["chosen"], row["rejected"]):
        h.update(str(text).encode() + b"\0")
    for image in row_images(row):
        h.update(image_key(image).encode())
    return h.hexdigest()


@dataclass
class Diagnosis:
    """One row per diagnosed pair (`columns`, with `row` the index in the data) and what was
    skipped (`report`: rows too long for `max_length`, counted as in training); `states`, what
    the columns were computed from (diagnose_states.py)."""

    columns: dict[str, list[Any]]
    report: ValidationReport
    hidden_size: int
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    states: PairStates | None = None

    def __len__(self) -> int:
        return len(self.columns["row"])


def diagnose_rows(model: Any, processor: Any, rows: Any, *, batch_size: int = 32,
                  max_length: int | None = None, with_reference: bool = False,
                  progress: bool = True, model_key: tuple[Any, ...] | None = None,
                  states: str | Path | None = None,
                  source_row: Callable[[int], int] | None = None) -> Diagnosis:  # fmt: skip
    """Diagnose every pair of `rows` (PreferencePair rows with `prompt`, `chosen`, `rejected`
    and their images) in batches of `batch_size` pairs. Rows whose `rejected` is the PRISM-CoT
    marker `SFT_ONLY` (no rejected answer) are skipped and counted as `sft_only`; the report
    names rows as `source_row` does (the opened data's `ValidationReport.source_row`), the
    `row` column by their index in `rows`.

    `model_key` (`VLM.weights_key`): read the per-pair states from the cache when an entry
    for this model, these pairs and this tokenization exists (no model pass), else compute
    and store them there. `states`: a states file to use instead (`--states`), refused with an
    InputError unless it matches the model's hidden size (and `model_key`, and the pairs)."""
    import time

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    collator = PairCollator(processor, ("main",), max_length)
    report = ValidationReport(name="diagnose")
    first: dict[str, int] = {}
    columns: dict[str, list[Any]] = {"row": [], "duplicate_of": []}
    keep: list[int] = []
    keys: list[str] = []
    named = source_row or (lambda i: i)
    for i in range(len(rows)):
        row = rows[i]
        # PRISM-CoT's rows have no rejected answer to compare with; others are skipped as
        # training skips them (a pre-templated prompt, longer than max_length...)
        reason = "sft_only" if row["rejected"] == SFT_ONLY else collator.skip_reason(row)
        if reason is not None:
            report.skip(named(i), reason)
            continue
        report.keep()
        keep.append(i)
        key = pair_key(row)
        keys.append(key)
        columns["row"].append(i)
        columns["duplicate_of"].append(first[key] if key in first else -1)
        first.setdefault(key, i)
    hidden = int(_core(model).get_output_embeddings().weight.shape[-1])
    ident = StatesKey.of(model_key, keys, processor)
    found, notes = None, []
    if states is not None:
        found = load_states(Path(states), "--states")
        check_states(found, Path(states), "--states", ident, hidden)
        if with_reference and not found.has_reference:
            raise InputError(f"--states {states}: holds no reference log-probs (computed "
                             "without --adapter); drop --states to compute them")  # fmt: skip
        notes.append(f"CHES states from --states {states} (no model pass)")
    elif model_key and keep:  # nothing to diagnose: nothing worth a cache entry
        path = ident.path()
        if path.is_file():
            found = load_states(path, "cached CHES states")
            check_states(found, path, "cached CHES states", ident, hidden)
            if with_reference and not found.has_reference:
                found = None  # an entry written without the reference: computed again below
            else:
                notes.append(f"CHES states from the cache {path} (no model pass)")
    if found is None:
        found = _compute_states(model, collator, rows, keep, batch_size, with_reference,
                                progress, ident, hidden)  # fmt: skip
        if model_key and keep:
            save_states(ident.path(), found)
    # the same pairs in the same order (`pairs` matched), numbered as this caller's data:
    # a recipe's entry numbers the rows that fit, while the written file follows pairs.parquet
    found.tensors["row"] = torch.tensor(keep, dtype=torch.int64)
    tensors = found.tensors
    if not with_reference:  # states with a reference serve a call without one
        tensors = {k: v for k, v in tensors.items() if k not in REFERENCE}
    columns.update(state_columns(tensors))
    _orient(columns, rows, tensors)
    return Diagnosis(columns, report, hidden, time.perf_counter() - start, notes, found)


def _orient(columns: dict[str, list[Any]], rows: Any, t: dict[str, torch.Tensor]) -> None:
    """Pairs whose label is below 0.5 (a label 0: the `rejected` answer was preferred) are
    ranked right when the model prefers `rejected` (`rejected_preferred` marks them), and
    their CHES / LN-CHES take `rejected` as y+ (the preferred answer, whose likelihood DPO
    displaces; the scores are not symmetric in y+ and y-). Pairs labelled 0.5 get
    `tied_label` and no accuracy value (None). A column of labels all 1 or missing changes
    nothing."""
    names = getattr(rows, "column_names", None) or []
    if "label" not in names:
        return
    labels = rows["label"]
    tied = [_tied(labels[i]) for i in columns["row"]]
    if any(tied):
        columns["tied_label"] = tied
        ranked = columns["ranking_correct"]
        columns["ranking_correct"] = [None if d else v for v, d in zip(ranked, tied, strict=True)]
        if "ref_chosen" in columns:
            _implicit_correct(columns)
    flip = [labels[i] is not None and float(labels[i]) < 0.5 for i in columns["row"]]
    if not any(flip):
        return
    columns["rejected_preferred"] = flip
    swap = torch.tensor(flip)
    sums, counts = (t["chosen_sum"], t["rejected_sum"]), (t["chosen_tokens"], t["rejected_tokens"])
    s_w, s_l = torch.where(swap[:, None], sums[1], sums[0]), torch.where(swap[:, None], *sums)
    n_w, n_l = torch.where(swap, counts[1], counts[0]), torch.where(swap, *counts)
    ches, ln_ches = ches_scores(s_w, s_l, n_w, n_l)  # y+ = the preferred answer
    columns["ches"], columns["ln_ches"] = ches.tolist(), ln_ches.tolist()
    lc, lr = columns["logp_chosen"], columns["logp_rejected"]
    tied = _tied_column(columns)
    columns["ranking_correct"] = [
        None if d else (b > a) if f else (a > b)
        for a, b, f, d in zip(lc, lr, flip, tied, strict=True)
    ]
    if "ref_chosen" in columns:
        _implicit_correct(columns)


def _tied_column(columns: dict[str, list[Any]]) -> list[bool]:
    return columns.get("tied_label") or [False] * len(columns["logp_chosen"])


def _implicit_correct(columns: dict[str, list[Any]]) -> None:
    """implicit_correct (1, 0.5 on an exact tie, 0) from the log-prob columns, the
    `rejected_preferred` pairs' margin read the other way; None for a `tied_label` pair."""
    flip = columns.get("rejected_preferred") or [False] * len(columns["logp_chosen"])
    margins = [(a - ra) - (b - rb) for a, b, ra, rb in zip(
        columns["logp_chosen"], columns["logp_rejected"], columns["ref_chosen"],
        columns["ref_rejected"], strict=True)]  # fmt: skip
    tied = _tied_column(columns)
    columns["implicit_correct"] = [
        None if d else _credit(-m if f else m) for m, f, d in zip(margins, flip, tied, strict=True)
    ]


def _share(values: list[Any]) -> float | None:
    """The mean of the values that are not None (booleans count 1 / 0); None if none is."""
    decided = [float(v) for v in values if v is not None]
    return sum(decided) / len(decided) if decided else None


def add_reference(diag: Diagnosis, reference: Diagnosis, name: str,
                  source_row: Callable[[int], int] | None = None) -> None:  # fmt: skip
    """Give `diag` reference log-probs and implicit-reward accuracy from another model's
    diagnosis of the same pairs (`--reference`: e.g. the base of a full fine-tune, which has
    no adapter to switch off). Both must have diagnosed the same rows with the same token
    counts, else the log-probs would not be of the same sequences: an InputError naming the
    first pair that differs as `source_row` names it (`diagnose_rows`)."""
    if diag.columns["row"] != reference.columns["row"]:
        raise InputError(f"--reference {name} skipped other pairs than the model (a different "
                         "tokenizer or length limit): its log-probs would not line up")  # fmt: skip
    for side in ("chosen_tokens", "rejected_tokens"):
        if diag.columns[side] != reference.columns[side]:
            pairs = zip(diag.columns[side], reference.columns[side], strict=True)
            first = next(i for i, (a, b) in enumerate(pairs) if a != b)
            row = (source_row or (lambda i: i))(diag.columns["row"][first])
            raise InputError(f"--reference {name} tokenizes the answers differently from the "
                             f"model (pair {row}: {reference.columns[side][first]} against "
                             f"{diag.columns[side][first]} {side.replace('_', ' ')}): implicit "
                             "accuracy needs one tokenizer")  # fmt: skip
    diag.columns["ref_chosen"] = list(reference.columns["logp_chosen"])
    diag.columns["ref_rejected"] = list(reference.columns["logp_rejected"])
    _implicit_correct(diag.columns)


def _compute_states(model: Any, collator: PairCollator, rows: Any, keep: list[int],
                    batch_size: int, with_reference: bool, progress: bool, ident: StatesKey,
                    hidden: int) -> PairStates:  # fmt: skip
    """The model pass: the states of the pairs `keep`, `batch_size` pairs per forward."""
    reference = VLMPairScorer(model, "adapters", pack=False) if with_reference else None
    parts = []
    bar = tqdm(total=len(keep), desc="diagnosing pairs", unit="pair", disable=not progress)
    for b in range(0, len(keep), batch_size):
        ids = keep[b : b + batch_size]
        batch = collator([rows[i] for i in ids], check_length=False, row_ids=ids)
        parts.append(batch_states(model, batch.to(_core(model).device), reference))
        bar.update(len(ids))
    bar.close()
    return new_states(parts, keep, ident, hidden)


def summarize(diag: Diagnosis) -> dict[str, Any]:
    """Accuracies, score quantiles, length means, duplicates and skips of a diagnosis."""
    cols, n = diag.columns, len(diag)
    out: dict[str, Any] = {"pairs": n, "read": diag.report.total,
                           "skipped": dict(diag.report.skipped), "hidden_size": diag.hidden_size,
                           "seconds": round(diag.seconds, 2)}  # fmt: skip
    if n == 0:
        return out
    # over the pairs with a preference: a pair labelled 0.5 has no right order
    tied = _tied_column(cols)
    out["tied_labels"] = sum(tied)
    out["ranking_accuracy"] = _share(cols["ranking_correct"])
    if "implicit_correct" in cols:
        out["implicit_accuracy"] = _share(cols["implicit_correct"])
        out["implicit_ties"] = sum(v == 0.5 for v in cols["implicit_correct"])
    ties = sum(a == b and not d for a, b, d in
               zip(cols["logp_chosen"], cols["logp_rejected"], tied, strict=True))  # fmt: skip
    out["ranking_ties"] = ties
    out["duplicates"] = sum(d >= 0 for d in cols["duplicate_of"])
    if "rejected_preferred" in cols:  # label-0 pairs, ranked with `rejected` as the winner
        out["rejected_preferred"] = sum(cols["rejected_preferred"])
    for name in ("chosen_tokens", "rejected_tokens"):
        out[f"mean_{name}"] = sum(cols[name]) / n
    for name in ("ches", "ln_ches"):
        values = torch.tensor(cols[name], dtype=torch.float64)
        qs = torch.quantile(values, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
        out[name] = {"mean": float(values.mean()), "p05": float(qs[0]), "median": float(qs[1]),
                     "p95": float(qs[2]), "max": float(values.max())}  # fmt: skip
    out.update(group_means(cols, range(n)))
    return out


def group_means(cols: dict[str, list[Any]], idx: Any) -> dict[str, float]:
    """Mean log-probs of the pairs `idx` and, with a reference, their mean change from it
    (`chosen_change` < 0: the chosen answers lost likelihood, Razin et al.'s displacement)."""
    idx = list(idx)
    out = {"logp_chosen": sum(cols["logp_chosen"][i] for i in idx) / len(idx),
           "logp_rejected": sum(cols["logp_rejected"][i] for i in idx) / len(idx)}  # fmt: skip
    if "ref_chosen" in cols:
        for side in ("chosen", "rejected"):
            out[f"ref_{side}"] = sum(cols[f"ref_{side}"][i] for i in idx) / len(idx)
            out[f"{side}_change"] = out[f"logp_{side}"] - out[f"ref_{side}"]
    return {f"mean_{k}": v for k, v in out.items()}


def summarize_by(diag: Diagnosis, groups: list[str]) -> dict[str, dict[str, Any]]:
    """Per group (e.g. the rows' `source`, one label per diagnosed pair): pairs, ranking and
    implicit accuracy and the mean log-probs and changes of `group_means`."""
    cols, out = diag.columns, {}
    for name in sorted(set(groups)):
        idx = [i for i, g in enumerate(groups) if g == name]
        entry: dict[str, Any] = {"pairs": len(idx),
                                 "ranking_accuracy": _share([cols["ranking_correct"][i]
                                                             for i in idx])}  # fmt: skip
        if "implicit_correct" in cols:
            entry["implicit_accuracy"] = _share([cols["implicit_correct"][i] for i in idx])
        out[name] = {**entry, **group_means(cols, idx)}
    return out
