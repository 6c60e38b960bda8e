"""`mmalign data diagnose DATA --model MODEL --out DIR`: per-pair diagnostics of VLM
preference data (mmalign/vlm/diagnose.py: CHES, LN-CHES, ranking and implicit accuracy,
lengths, duplicates); diffusion pairs get ranking and implicit accuracy only
(mmalign/eval/diagnose_diffusion.py: pairs.parquet, summary.json and a report.html of the
lowest-margin pairs).

Writes `DIR/pairs.parquet` (one row per diagnosed pair), `DIR/summary.json` and
`DIR/report.html` (histograms and the highest-LN-CHES pairs with their images and texts; the
histograms need matplotlib, from the `eval` extra: without it the report says so, and the
command says it before the model pass); with `--filter ln_ches:keep_lowest=0.05`, also
`DIR/filtered/`, a saved dataset of the kept rows that `mmalign train` reads as `data.path`.
`DIR/states.safetensors` holds the per-pair states the scores come from (S+, S-, the token
counts and log-probs; layout in mmalign/vlm/diagnose_states.py): `--states` reuses it (no
model pass) after checking it against the model's hidden size, weights and the data. Without
`--states` the same states are cached by model, data and tokenization, so a rerun, or a
recipe's `data.filter` on the same data and model, skips the model pass.

Image-pair data goes to the diffusion diagnosis: the toy image kinds and `pickapic:` by name,
and a saved dataset (`save_to_disk`) by its columns (`chosen` holding images, or Pick-a-Pic's
`jpg_0`), since its name says nothing. The models run on `--device` (default `auto`: a GPU
where torch sees one, else the CPU; `devices.resolve_device`) in float32.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import InputError
from ..words import plural

# toy kinds whose pairs are images: CHES is defined for language-model responses
DIFFUSION_TOY = ("toy:pairs", "toy:style", "toy:users", "toy:flaws")
SAVED_MARKERS = ("state.json", "dataset_dict.json")  # what `save_to_disk` writes


def is_diffusion_data(data: str) -> bool:
    """Image-pair data: a diffusion toy kind (`toy:pairs`, `toy:pairs:1`) or Pick-a-Pic."""
    return data.startswith("pickapic:") or any(
        data == kind or data.startswith(kind + ":") for kind in DIFFUSION_TOY
    )


def _is_image_feature(feature: Any) -> bool:
    """A `datasets` feature that holds images: `Image()`, or the `{bytes, path}` struct it is
    stored as when a dataset was written without the Image type."""
    from datasets import Image

    if isinstance(feature, Image):
        return True
    return isinstance(feature, dict) and {"bytes", "path"} <= set(feature)


def has_image_pairs(data: str, split: str) -> bool:
    """A saved dataset (`save_to_disk`) of image pairs: `chosen` holds images, or the columns
    are Pick-a-Pic's (`jpg_0`). Reads the schema only, no rows; any other source is judged by
    its name (`is_diffusion_data`), as opening a hub id here would download it."""
    local = Path(data).expanduser()
    if not (local.is_dir() and any((local / f).is_file() for f in SAVED_MARKERS)):
        return False
    from datasets import Dataset

    from ..data.saved import load_saved

    ds = load_saved(local)  # (0 rows: the reader that opens it says so, naming DATA)
    if not isinstance(ds, Dataset):
        if split not in ds:
            return False  # the VLM reader raises naming the splits there are
        ds = ds[split]
    return "jpg_0" in ds.features or _is_image_feature(ds.features.get("chosen"))


def is_diffusion_model(model: str) -> bool:
    """toy:sd, a diffusers pipeline folder or a diffusion training output_dir."""
    run = Path(model) / "mmalign_run.json"
    if run.is_file():
        return json.loads(run.read_text()).get("task") == "diffusion"
    return model == "toy:sd" or (Path(model) / "model_index.json").is_file()


def write_outputs(diag: Any, rows: Any, out: Path, meta: dict[str, Any], pair_filter: Any = None,
                  top: int = 12,
                  source_row: Callable[[int], int] | None = None,
                  ) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """Parquet table, summary.json, report.html (and filtered/, states.safetensors) under
    `out`; the summary and the names of everything written, for the command to list. The
    table's `row` and `duplicate_of` name rows as `source_row` does (the opened data's
    `ValidationReport.source_row`: the row of DATA as read, as its skip reports name them)."""
    import pandas as pd

    from .diagnose import summarize, summarize_by
    from .diagnose_html import render_report
    from .diagnose_states import STATES_FILE, save_states

    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(diag.columns)
    texts = [n for n in ("prompt", "chosen", "rejected", "source") if n in rows.column_names]
    for name in texts:
        table[name] = [str(rows[i][name]) for i in diag.columns["row"]]
    named = source_row or (lambda i: i)
    table["position"] = table["row"]  # in `rows`: the report's images are read from there
    table["row"] = [named(i) for i in diag.columns["row"]]
    table["duplicate_of"] = [named(d) if d >= 0 else -1 for d in diag.columns["duplicate_of"]]
    table.drop(columns="position").to_parquet(out / "pairs.parquet", index=False)
    written = ["pairs.parquet", "summary.json", "report.html"]
    summary = {**meta, **summarize(diag)}
    if "source" in table and len(table):  # e.g. toy:safety's forbidden / synonym / benign
        summary["by_source"] = summarize_by(diag, list(table["source"]))
    if pair_filter is None and (out / "filtered").exists():
        # an earlier run's filtered/ beside a summary with no filter would be read as this one's
        shutil.rmtree(out / "filtered")
        print(f"mmalign: removed {out / 'filtered'}, an earlier run's: this run has no --filter",
              file=sys.stderr)  # fmt: skip
    if pair_filter is not None:
        kept = [diag.columns["row"][i] for i in pair_filter.keep(diag.columns[pair_filter.metric])]
        rows.select(kept).save_to_disk(str(out / "filtered"))
        written.append("filtered/")
        summary["filter"] = {"spec": str(pair_filter), "kept": len(kept), "of": len(diag)}
    if diag.states is not None:
        save_states(out / STATES_FILE, diag.states)
        written.append(STATES_FILE)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.html").write_text(render_report(table, rows, summary, top=top))
    return summary, written


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from ..cli_errors import at_least_one
    from ..data.pair_filter import parse_filter
    from ..devices import resolve_device
    from ..toy.cache import split_to_read
    from .cli import load_from_args
    from .data import open_vlm_pairs
    from .diagnose import add_reference, diagnose_rows
    from .diagnose_html import NO_HISTOGRAMS, have_matplotlib

    try:
        pair_filter = parse_filter(args.filter) if args.filter else None
    except ValueError as err:
        raise InputError(f"--filter: {err}") from None
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():  # said before the model pass, not after it
        raise InputError(f"--out {args.out} is an existing file: give a folder (new, or one "
                         "an earlier diagnose wrote)")  # fmt: skip
    at_least_one(args, "batch_size", "top")  # a negative --top cut rows off the report's end
    if args.pickapic_root is not None and not args.data.startswith("pickapic:"):
        raise InputError(f"--pickapic-root is for DATA pickapic:<split>, not {args.data}")
    args.split = split_to_read(args.data, args.split)  # toy data: refused, not ignored
    # a device the machine lacks: refused before anything loads; both paths (the VLM's
    # `load_from_args` and the diffusion scorer) read the resolved name
    args.device = str(resolve_device(args.device))
    if args.states is not None and not Path(args.states).is_file():
        raise InputError(f"--states {args.states}: no such file (it is DIR/states.safetensors "
                         "of an earlier `mmalign data diagnose --out DIR`)")  # fmt: skip
    if args.reference is not None and args.adapter is not None:
        raise InputError(
            f"--reference {args.reference} and --adapter {args.adapter}: give one (with "
            "--adapter the reference is --model without the adapter)"
        )
    if is_diffusion_data(args.data) or has_image_pairs(args.data, args.split):
        if args.reference is not None:
            raise InputError(
                f"--reference {args.reference}: for image pairs give the reference as --model "
                "and the tuned run as --adapter (a LoRA or a full fine-tune's output_dir)"
            )
        if args.on_diffusion is None or not is_diffusion_model(args.model):
            raise InputError(
                f"{args.data} holds image pairs: CHES and LN-CHES are defined for language-"
                "model responses (hidden states of the response tokens), not for diffusion. "
                "Give a diffusion --model (toy:sd, a pipeline folder or a training output_dir; "
                "--adapter a tuned run on top of it) for per-pair ranking and implicit-reward "
                "accuracy."
            )
        if args.states is not None:
            raise InputError(f"--states {args.states}: CHES states are for VLM pairs; "
                             f"{args.data} holds image pairs")  # fmt: skip
        return int(args.on_diffusion(args))
    if not have_matplotlib():  # said now, before the model pass, so it can be stopped
        print(f"mmalign: {NO_HISTOGRAMS}", file=sys.stderr)
    rows, report = open_vlm_pairs(args.data, args.split, max_samples=args.max_samples,
                                  key="DATA")  # fmt: skip
    if report.num_skipped:
        print(f"mmalign: {report}")
    if len(rows) == 0:
        raise InputError(f"{args.data}: no VLM preference pairs to diagnose ({report})")
    reference = None
    if args.reference is not None:  # its own pass first: one model in memory at a time
        ref_vlm = load_from_args(argparse.Namespace(**{**vars(args), "model": args.reference,
                                              "adapter": None}), key="--reference")  # fmt: skip
        reference = diagnose_rows(ref_vlm.model, ref_vlm.processor, rows,
                                  batch_size=args.batch_size, max_length=args.max_length,
                                  model_key=ref_vlm.weights_key,
                                  source_row=report.source_row)  # fmt: skip
        ref_source = ref_vlm.source
        del ref_vlm
    vlm = load_from_args(args, key="--model")  # MODEL with --adapter, on --device
    diag = diagnose_rows(vlm.model, vlm.processor, rows, batch_size=args.batch_size,
                         max_length=args.max_length,
                         with_reference=args.adapter is not None,
                         model_key=vlm.weights_key, states=args.states,
                         source_row=report.source_row)  # fmt: skip
    if reference is not None:
        add_reference(diag, reference, args.reference, report.source_row)
    if diag.report.num_skipped:
        print(f"mmalign: {diag.report}")
    for note in diag.notes:
        print(f"mmalign: {note}")
    meta = {"data": args.data, "split": args.split, "model": vlm.source,
            "adapter": args.adapter, "opened": dict(report.skipped)}  # fmt: skip
    if reference is not None:
        meta["reference"] = ref_source
    summary, written = write_outputs(diag, rows, Path(args.out), meta, pair_filter, top=args.top,
                                     source_row=report.source_row)  # fmt: skip

    def share(key: str) -> str:  # None: every pair labelled 0.5, no order to be right about
        value = summary.get(key, float("nan"))
        return "n/a" if value is None else f"{value:.1%}"

    tied = summary.get("tied_labels", 0)
    print(f"{plural(summary['pairs'], 'pair')} in {summary['seconds']:.1f}s; ranking accuracy "
          f"{share('ranking_accuracy')}"
          + (f", implicit accuracy {share('implicit_accuracy')}"
             if "implicit_accuracy" in summary else "")
          + (f" ({plural(tied, 'pair')} labelled 0.5 left out of the accuracies)" if tied else "")
          + f"; duplicates {summary.get('duplicates', 0)}")  # fmt: skip
    if "filter" in summary:
        f = summary["filter"]
        print(f"filter {f['spec']}: kept {f['kept']} of {f['of']} -> {Path(args.out, 'filtered')}")
    print(f"wrote {Path(args.out).resolve()} ({', '.join(written)})")
    return 0


def register(sub: Any, on_diffusion: Any = None) -> None:
    """Add `mmalign data diagnose` (the `data` command exists: mmalign/data_cli.py).
    `on_diffusion(args) -> int` handles image-pair data (the CLI passes the evaluation
    layer's, mmalign/eval/diagnose_diffusion.py: this module stays below it)."""
    from ..devices import add_device_options

    data = sub.choices["data"]
    actions = next(a for a in data._actions if isinstance(a, argparse._SubParsersAction))
    p = actions.add_parser("diagnose", help="per-pair CHES / LN-CHES, ranking and implicit "
                           "accuracy, lengths and duplicates of VLM preference data")  # fmt: skip
    p.add_argument("data", help="VLM pairs: toy:<kind>, a saved dataset, a JSON file, a hub "
                   "id; or diffusion pairs (toy:pairs[:seed], pickapic:<split>, a saved dataset "
                   "of image pairs)")  # fmt: skip
    p.add_argument("--model", required=True, help="VLM folder, hub id, toy:vlm or training "
                   "output_dir")  # fmt: skip
    p.add_argument("--adapter", default=None, help="a PEFT adapter on top of MODEL; the model "
                   "without it is the reference for implicit-reward accuracy")  # fmt: skip
    p.add_argument("--reference", default=None, help="VLM pairs: the reference model for "
                   "implicit-reward accuracy when MODEL has no adapter to switch off (e.g. the "
                   "base of a full fine-tune); it must share MODEL's tokenizer")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", default=None, help="split to read (default train; none for toy "
                   "data, which is built, not split)")  # fmt: skip
    p.add_argument("--filter", default=None, help="write DIR/filtered with the pairs kept by "
                   "METRIC:RULE=VALUE, e.g. ln_ches:keep_lowest=0.05 or ln_ches:max=3")  # fmt: skip
    p.add_argument("--max-length", type=int, default=None, help="skip (and count) pairs "
                   "longer than this many tokens, as training's vlm.max_length")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32, help="pairs per forward")
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--states", default=None, help="reuse DIR/states.safetensors of an earlier "
                   "run on the same data and model instead of the model pass (checked against "
                   "the model's hidden size and weights)")  # fmt: skip
    p.add_argument("--top", type=int, default=12, help="highest-LN-CHES pairs in the report "
                   "(diffusion data: the lowest-margin pairs)")  # fmt: skip
    add_device_options(p, "each model", dtype=False)
    p.add_argument("--draws", type=int, default=4, help="diffusion data: (timestep, noise) "
                   "draws per pair")  # fmt: skip
    from ..data.prompts import PICKAPIC_FLAG

    p.add_argument(PICKAPIC_FLAG, default=None, help="DATA pickapic:<split>: a local Pick-a-Pic "
                   "v2 folder (default $MMALIGN_PICKAPIC, else the hub)")  # fmt: skip
    p.set_defaults(func=_cmd_diagnose, on_diffusion=on_diffusion)
