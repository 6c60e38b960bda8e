"""`mmalign data diagnose` on diffusion preference pairs: per-pair ranking accuracy and, with a
reference, implicit-reward accuracy (mmalign/eval/implicit.py's `score_pairs`).

Ranking (Chen et al., "Preference Learning Algorithms Do Not Learn Preference Rankings",
Section 3) needs the model's likelihood of each image; a diffusion model has none in closed
form, so the pair is ranked by Diffusion-DPO's stand-in for it (Wallace et al. 2024, Eq. 9-10):
the chosen image is ranked right when the model denoises it better, -MSE_w > -MSE_l, on the
same (timestep, noise) draws. Implicit accuracy: (ref_mse_w - mse_w) - (ref_mse_l - mse_l) > 0,
with `--adapter` the tuned weights and `--model` their base; an exact tie (margin 0) counts
half, as in `mmalign eval accuracy --model`. Pairs labelled 0.5 are left out and counted.
CHES and LN-CHES (Razin et al.) are defined on a language model's hidden states of the
response tokens, so they are not computed here, and `--filter` (which ranks by them) is
refused.

Writes DIR/pairs.parquet (one row per scored pair, with its prompt), DIR/summary.json and
DIR/report.html: the summary and the `--top` pairs of lowest margin (the implicit margin with
`--adapter`, else the ranking margin -MSE_w - (-MSE_l)), the pairs the model gets most wrong.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..config import InputError
from ..diagnose_page import page_head, value_table
from ..words import plural

NO_CHES = ("CHES and LN-CHES are defined for language-model responses (hidden states of the "
           "response tokens, Razin et al.); diffusion pairs get ranking and implicit-reward "
           "accuracy only")  # fmt: skip


def diagnose_diffusion(args: argparse.Namespace) -> int:
    """Write DIR/pairs.parquet, DIR/summary.json and DIR/report.html for the diffusion pairs
    of `args.data`."""
    import pandas as pd

    from .implicit import implicit_credit, score_pairs

    if args.filter:
        raise InputError(f"--filter {args.filter}: {NO_CHES}, so there is nothing to filter on")
    tuned = args.adapter or args.model
    base = args.model if args.adapter else None
    scores = score_pairs(tuned, args.data, base=base, reference=args.adapter is not None,
                         draws=args.draws, batch_size=args.batch_size,
                         max_rows=args.max_samples, device=args.device,
                         pickapic_root=args.pickapic_root,
                         split=args.split, key="--adapter" if args.adapter else "--model",
                         base_key="--model")  # fmt: skip
    columns: dict[str, list] = {
        # the row of DATA as read (rows validation skipped counted), as every report names it
        "row": [scores.report.source_row(i) for i in scores.kept],
        "prompt": scores.prompts,
        "score_chosen": scores.chosen.tolist(),
        "score_rejected": scores.rejected.tolist(),
        "ranking_correct": (scores.chosen > scores.rejected).tolist(),
    }
    summary: dict = {"data": args.data, "model": args.model, "adapter": args.adapter,
                     "kind": "diffusion", "pairs": len(scores.kept), "draws": args.draws,
                     "ties_left_out": scores.ties, "tied_labels": scores.ties,
                     "skipped": dict(scores.report.skipped),
                     # label-0 rows, scored with their rejected image as score_chosen
                     "rejected_preferred": scores.swapped,
                     "note": NO_CHES}  # fmt: skip
    n = len(scores.kept)
    summary["ranking_accuracy"] = sum(columns["ranking_correct"]) / n
    if scores.ref_chosen is not None and scores.ref_rejected is not None:
        margin = scores.implicit_margin()
        columns["ref_score_chosen"] = scores.ref_chosen.tolist()
        columns["ref_score_rejected"] = scores.ref_rejected.tolist()
        columns["implicit_margin"] = margin.tolist()
        columns["implicit_correct"] = implicit_credit(margin).tolist()  # 1, 0.5 (tie) or 0
        summary["implicit_accuracy"] = sum(columns["implicit_correct"]) / n
        summary["implicit_ties"] = int((margin == 0).sum())
        summary["mean_implicit_margin"] = float(margin.mean())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(columns)
    table.to_parquet(out / "pairs.parquet", index=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.html").write_text(render_report(table, summary, top=args.top))
    print(summary_line(summary))
    print(f"wrote {out.resolve()} (pairs.parquet, summary.json, report.html)")
    return 0


def render_report(table: Any, summary: dict[str, Any], top: int = 12) -> str:
    """The HTML report: the summary and the `top` pairs of lowest margin, every column of
    pairs.parquet, escaped (prompts are user text). The margin is the implicit one where a
    reference was scored, else the model's own ranking margin score_chosen - score_rejected:
    the pairs at the bottom are those the model ranks most wrongly."""
    parts = page_head(summary)
    if "implicit_margin" in table:
        name = "implicit_margin"
    else:  # shown as a column of its own: the table's sort key
        name = "ranking_margin"
        table = table.assign(ranking_margin=table["score_chosen"] - table["score_rejected"])
    # a stable sort: pairs of equal margin keep the data's order, so the report is reproducible
    lowest = table.sort_values(name, kind="stable").head(top)
    records = [list(r) for r in lowest.itertuples(index=False)]
    parts.append(
        f"<h2>The {len(lowest)} pairs of lowest {name.replace('_', ' ')} (the model ranks "
        "them most wrongly)</h2>"
    )
    parts.append(value_table(list(lowest.columns), records))
    return "\n".join(parts) + "\n"


def summary_line(summary: dict) -> str:
    """The line `mmalign data diagnose` prints of a diffusion diagnosis (its summary.json)."""
    implicit = summary.get("implicit_accuracy")
    return (
        f"{plural(summary['pairs'], 'diffusion pair')} "
        f"({plural(summary['tied_labels'], 'tied label')} left out); ranking accuracy "
        f"{summary['ranking_accuracy']:.1%}"
        + (f", implicit accuracy {implicit:.1%}" if implicit is not None else "")
        + f". {NO_CHES}."
    )
