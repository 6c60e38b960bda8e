"""`mmalign data prism-mcts`: PRISM's step-level preference pairs (Li et al. 2025, section 3.2)
from a model's own stages, searched per request (`search.py`) and judged (`judges.py`).

Writes into `--out`: `trees/tree-<row>.json` (every tree, nodes with their visits, values and
texts, and its statistics), `pairs/` (a PreferencePair dataset for `mmalign train`, chosen and
rejected the full prefixes) and `summary.json` (counts, failures, throughput, per-tree stats).
A tree's `row` is its request's position among those searched (the resume key its file is
named by); `summary.json`'s `per_tree` adds `source_row`, the row of `--data` it searched, as
the data's report and the refused prompts name rows.
A rerun with the same settings resumes: finished trees are loaded, not searched again (those
in a batch that runs again are searched again, and counted apart); a rerun with other settings
(search, model weights, data rows, judge, sampling, device type or dtype) is refused before
any model loads (the weights keys read from the models' files, `VLMRef`). Rows whose prompt
is already in the chat template's format (or holds its BOS or EOS as text) are left out, as
training leaves them out: counted on stderr and in `summary.json` (`prompts_refused`). The
policy and a `vlm:` judge run on `--device` (default `auto`: a GPU where torch sees one, else
the CPU) in `--dtype` (default float32).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...cli_errors import finite_float
from ...config import InputError
from ...subcommands import group_actions
from ...words import plural

if TYPE_CHECKING:
    import torch

    from ...data.schema import ValidationReport


def policy_ref(model: str, dtype: str = "float32") -> Any:
    """What `load_policy` loads, as a `VLMRef`: its processor and weights key, unloaded."""
    from ..load import VLMRef

    return VLMRef(model, dtype=dtype, key="--model")


def load_policy(
    model: str, dtype: str = "float32", device: str | torch.device | None = None
) -> Any:
    """A VLM from a folder, hub id, adapter folder or training output_dir (its final weights,
    found in the folder as `load_vlm` finds them; an unfinished run is refused); a LoRA
    adapter is merged in (this is inference only). `device`: where it runs (None: the CPU,
    where it loads)."""
    from ..load import load_vlm, merge_adapter

    vlm = load_vlm(model, dtype=dtype, device=device, key="--model")
    merge_adapter(vlm)
    return vlm


def _saved_trees_per_batch(args: argparse.Namespace) -> int | None:
    """A resumed search keeps the batching it was started with (its trees depend on it; the
    default was 16 before it became batch-size / children); None for a new search."""
    saved = Path(args.out) / "search.json"
    if saved.is_file():
        try:
            return int(json.loads(saved.read_text())["trees_per_batch"])
        except (ValueError, KeyError, TypeError):
            pass  # not a search's settings: Search names the mismatch
    return None


def _check_before_loading(args: argparse.Namespace, data: list[dict[str, Any]], config: Any,
                          precision: dict[str, Any]) -> str | None:  # fmt: skip
    """Refuse a resume into `--out` whose settings differ, before any model loads: first what
    the arguments and the data give (`settings.planned_settings`), so an old CPU search
    reopened on a GPU machine loads nothing onto the GPU to be refused; then the weights keys
    of the policy and a `vlm:` judge, read from their files (`VLMRef`: the same key the
    loaded model gives; `Search.run` compares all once more after loading). The rows'
    fingerprint when a saved search made it hash them, else None."""
    from .judges import judge_model
    from .settings import check_resume, default_trees_per_batch, planned_settings, rows_fingerprint

    out = Path(args.out)
    if not (out / "search.json").is_file():
        return None
    fingerprint = rows_fingerprint(data)
    per = args.trees_per_batch
    if per is None:  # search.json without its batching: Search's default, as it will use
        per = default_trees_per_batch(args.batch_size, config.children)
    sampling = {
        "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
    }  # as StageGenerator keeps them
    # `make_judge` names a judge by its spec (toy, vlm:<model>, package.module:function)
    mine = planned_settings(len(data), fingerprint, config, trees_per_batch=per, seed=args.seed,
                            judge=args.judge, sampling=sampling, precision=precision)  # fmt: skip
    judged = judge_model(args.judge)
    later = ["model", "judge_weights"] if judged is not None else ["model"]
    check_resume(out, mine, later)
    from ..load import VLMRef

    weights = {"model": policy_ref(args.model, precision["dtype"]).weights_key}
    if judged:  # (`vlm:` naming none is make_judge's error)
        weights["judge_weights"] = VLMRef(
            judged, dtype=precision["dtype"], key="--judge"
        ).weights_key
    # as `Search.settings` writes them (a JSON round trip: tuples read back as lists)
    check_resume(out, {**mine, **json.loads(json.dumps(weights, default=str))})
    return fingerprint


def _screened(
    args: argparse.Namespace, data: list[dict[str, Any]], report: ValidationReport
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, list[int]]:
    """The rows whose prompts the policy's chat template takes as raw user text (as training
    checks them, `ChatFormat.check_prompt`), read with its processor before it loads, the
    record of the others (None where none is refused): left out of the search, counted and
    named on stderr by their row in `--data` (`report`: the opened data's validation, which
    names its own skips so), and the row in `--data` of each row kept."""
    from ..chat_format import screen_prompts

    processor = policy_ref(args.model).processor
    prompts = [row["prompt"] for row in data]
    screen = screen_prompts(processor, prompts, "prism-mcts prompts", report.source_row)
    sources = [report.source_row(i) for i in screen.kept]
    if not screen.refused:
        return data, None, sources
    print(f"mmalign: {screen}", file=sys.stderr)
    if not screen.kept:
        raise InputError(f"--data {args.data}: every prompt is refused ({screen.report})")
    return [data[i] for i in screen.kept], screen.record(), sources


def summary_line(summary: dict[str, Any]) -> str:
    """The line `prism-mcts` prints from `summarize`'s summary."""
    this = summary["this_run"]
    again = summary.get("trees_researched", 0)
    resumed = f"{summary['trees_loaded']} resumed" + (f", {again} searched again" if again else "")
    batch = this.get("judge_batch_failures", 0)
    judge = (f"; {batch} judge batch failures, retried item by item "
             f"(first: {this.get('first_judge_batch_error')})" if batch else "")  # fmt: skip
    held = summary.get("pairs_withheld_unjudged", 0)
    held_text = f" ({held} withheld: an unjudged dead end on one side)" if held else ""
    return (f"prism-mcts: {plural(summary['trees'], 'tree')} ({resumed}), "
            f"{plural(summary['nodes'], 'node')}, {plural(summary['pairs'], 'pair')}"
            f"{held_text}; failures {summary['failures']}{judge}; "
            f"{this['nodes_per_second']} nodes/s ({this['samples_per_second']} samples/s), "
            f"{this['judge_calls_per_second']} judge calls/s")  # fmt: skip


def _cmd_mcts(args: argparse.Namespace) -> int:
    from ...devices import device_options
    from ...toy.cache import split_to_read
    from ..data import open_vlm_pairs
    from .format import tag_ids
    from .generate import StageGenerator
    from .judges import make_judge
    from .mcts import MCTSConfig
    from .search import Search, pair_rows, pairs_dataset, summarize

    if args.trees_per_batch is None:
        args.trees_per_batch = _saved_trees_per_batch(args)  # else Search's default
    for name in ("iterations", "children", "max_depth", "trees_per_batch", "batch_size",
                 "max_new_tokens"):  # fmt: skip
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1")
    device, dtype = device_options(args)  # a device the machine lacks: refused before loading
    split = split_to_read(args.data, args.split)  # toy data: refused, not ignored
    rows, report = open_vlm_pairs(args.data, split, max_samples=args.max_samples)
    print(report)
    if args.max_samples is not None and len(rows) < args.max_samples:
        # a toy spec builds its default 64 rows: say so rather than search fewer trees silently
        hint = (" (more toy requests: `mmalign toy data prism --n N --out DIR`, then --data "
                "DIR/pairs)" if str(args.data).startswith("toy:") else "")  # fmt: skip
        print(f"mmalign: --max-samples {args.max_samples}, but {args.data} has {len(rows)} "
              f"rows: searching {len(rows)} trees{hint}", file=sys.stderr)  # fmt: skip
    config = MCTSConfig(args.iterations, args.children, args.max_depth, args.c, args.margin,
                        args.min_value)  # fmt: skip
    data, refused, sources = _screened(args, [rows[i] for i in range(len(rows))], report)
    precision = {"device": device.type, "dtype": dtype}
    fingerprint = _check_before_loading(args, data, config, precision)
    vlm = load_policy(args.model, dtype=dtype, device=device)
    try:
        tag_ids(vlm.processor)
    except ValueError as err:
        raise InputError(f"--model {args.model}: {err}") from None
    judge = make_judge(args.judge, dtype=dtype, device=device)  # a vlm: judge beside the policy
    generate = StageGenerator(vlm.model, vlm.processor, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature, batch_size=args.batch_size)  # fmt: skip
    search = Search(data, generate, judge, config, args.out,
                    trees_per_batch=args.trees_per_batch, seed=args.seed,
                    model=vlm.weights_key, precision=precision,
                    data_fingerprint=fingerprint)  # fmt: skip
    started = time.perf_counter()
    trees = search.run()
    summary = summarize(search, trees, time.perf_counter() - started)
    pairs, pair_report = pairs_dataset(pair_rows(data, trees))
    out = Path(args.out)
    pairs.save_to_disk(str(out / "pairs"))  # type: ignore[union-attr]
    summary.update(model=args.model, data=args.data, pairs_skipped=pair_report.skipped)
    for entry in summary["per_tree"]:  # a tree's row is a position (its resume key): the user
        entry["source_row"] = sources[entry["row"]]  # looks for the row of their file
    if refused is not None:
        summary["prompts_refused"] = refused
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(summary_line(summary))
    print(f"pairs: {(out / 'pairs').resolve()}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from ...data.prism_files import read_prism_file

    try:
        rows, report = read_prism_file(args.source, kind=args.kind, max_samples=args.max_samples,
                                       require_format=args.require_format)  # fmt: skip
    except (FileNotFoundError, ValueError) as err:
        raise InputError(str(err)) from None
    print(report)
    rows.save_to_disk(str(args.out))
    print(f"{plural(len(rows), 'row')}: {Path(args.out).resolve()} (data.path for a recipe)")
    return 0


def register(sub: Any) -> None:
    """Add `prism-mcts` and `prism-import` to the `data` command (created when no one has)."""
    actions = group_actions(sub, "data")
    imp = actions.add_parser("prism-import", help="PRISM-CoT / PRISM-DPO release files (a folder "
                             "with data.json and images/) as a PreferencePair dataset")  # fmt: skip
    imp.add_argument("source", help="the release folder or its JSON file")
    imp.add_argument("--out", required=True, help="folder for the saved dataset")
    imp.add_argument(
        "--kind",
        choices=("cot", "dpo"),
        default=None,
        help="cot (SFT rows) or dpo (pairs); default: from the first record",
    )
    imp.add_argument("--max-samples", type=int, default=None)
    imp.add_argument(
        "--require-format",
        action="store_true",
        help="skip CoT responses that are not the four tagged stages",
    )
    imp.set_defaults(func=_cmd_import)
    p = actions.add_parser("prism-mcts", help="PRISM step-level preference pairs by tree search "
                           "over a model's own reasoning stages")  # fmt: skip
    p.add_argument("--model", required=True, help="the SFT model: training output_dir, adapter "
                   "or model folder (its tokenizer must have the stage tags)")  # fmt: skip
    p.add_argument("--data", required=True, help="requests (prompt + image), e.g. toy:prism")
    p.add_argument("--judge", default="toy", help="toy, vlm:<model> or package.module:function")
    p.add_argument("--out", required=True, help="output folder (a rerun resumes it)")
    p.add_argument("--split", default=None, help="split to read (default train; none for toy "
                   "data, which is built, not split)")  # fmt: skip
    p.add_argument("--max-samples", type=int, default=None, help="search only the first N rows")
    p.add_argument("--iterations", type=int, default=200, help="iterations per tree")
    p.add_argument("--children", type=int, default=3, help="samples per expansion")
    p.add_argument("--max-depth", type=int, default=5)
    p.add_argument("--c", type=finite_float, default=1.5, help="UCB exploration constant")
    p.add_argument(
        "--margin", type=finite_float, default=0.4, help="pairs: v_chosen - v_rejected > this"
    )
    p.add_argument("--min-value", type=finite_float, default=0.8, help="pairs: v_chosen >= this")
    p.add_argument(
        "--trees-per-batch",
        type=int,
        default=None,
        help="trees searched together (default: a resumed search's own, else batch-size / "
        "children, so one round of expansions fills a call)",
    )
    p.add_argument("--batch-size", type=int, default=96, help="sequences per generate call")
    p.add_argument("--max-new-tokens", type=int, default=48, help="per stage; longer is a failure")
    p.add_argument("--temperature", type=finite_float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    from ...devices import add_device_options

    add_device_options(p, "the policy and a vlm: judge")
    p.set_defaults(func=_cmd_mcts)
