"""`mmalign data show CARD`: what a dataset card resolves to, read on a sample of its rows;
`mmalign data smooth DATA --scorer NAME --out DIR`: SmPO soft labels from a reward model;
`mmalign data users SOURCE --out DIR`: PPD's per-user pairs, split into train / held-out users;
`mmalign data user-embed DATA`: PPD's user embeddings.

Prints the card (source, license, split, columns, policy, published rows), then opens the data
the way a recipe would (toy sets are built on first use and cached; Pick-a-Pic and the VLM
formats go through their readers) and reports the rows read, the columns and the skipped rows
by reason on the sample.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .data.cards import DatasetCard, load_card
from .subcommands import group_actions
from .words import plural

VLM_READERS = ("llava", "mmsafe", "realign", "trl")


def _open(card: DatasetCard, split: str, sample: int) -> tuple[Any, Any]:
    """(rows, ValidationReport) for up to `sample` rows of `split`."""
    if card.reader == "pickapic":
        from .data.pickapic import load_pickapic

        return load_pickapic(card.location, split, tie_policy=card.ties or "drop", max_rows=sample)
    if card.reader in VLM_READERS:
        from .vlm.data import open_vlm_pairs

        return open_vlm_pairs(card.location, split, format=card.reader, max_samples=sample)
    if card.reader == "richhf":  # labels in TFRecords, images and captions joined from a folder
        import os

        from .data.richhf import RichHFRows

        images = os.environ.get("MMALIGN_RICHHF_IMAGES") or f"{card.location}/images"
        rows = RichHFRows(card.location, split, images=images, max_rows=sample)
        return rows, rows.report
    # reader "pairs": a toy set (built once and cached) or a saved PreferencePair folder
    from .data.saved import load_saved
    from .data.schema import validate_rows
    from .toy.cache import TOY_PREFIX, toy_pairs

    location = card.location
    if location.startswith(TOY_PREFIX):
        location = str(toy_pairs(location[len(TOY_PREFIX) :], card.toy))
    rows = load_saved(location)
    if sample is not None:
        rows = rows.select(range(min(sample, len(rows))))
    return validate_rows(rows, "image" if card.kind != "text" else "text", strict=False)


def show(card: DatasetCard, split: str | None, sample: int) -> str:
    lines = [
        f"{card.name}  ({card.file})",
        f"  {card.description}" if card.description else "",
        f"  source: {', '.join(f'{k}={v}' for k, v in card.source.items())}",
        f"  license: {card.license}",
        f"  kind: {card.kind}, reader: {card.reader}, default split: {card.split}",
        "  published rows: "
        + ", ".join(f"{k} {'?' if v is None else f'{v:,}'}" for k, v in card.splits.items()),
        f"  ties: {card.ties or '-'}",
    ]
    lines += [f"  column {k} -> {v}" for k, v in card.columns.items()]
    lines += [f"  filter: {f}" for f in card.filters]
    if card.reader in ("none", "prompts"):
        lines.append(f"  no preference-pair reader: {card.notes or 'nothing to open'}")
        return "\n".join(line for line in lines if line)
    from .toy.cache import DEFAULT_SPLIT, split_to_read

    data = card.data_config()
    split = split_to_read(data["path"], split, card.split or DEFAULT_SPLIT)  # toy: refused
    lines.append(f"  resolves to: data.path={data['path']} data.split={split}")
    if data.get("toy"):
        lines.append(f"  toy options: {data['toy']}")
    rows, report = _open(card, split, sample)
    lines.append(f"  sample: {plural(len(rows), 'row')}, columns {list(rows.column_names)}")
    lines.append("  " + str(report).replace("\n", "\n  "))
    return "\n".join(line for line in lines if line)


def _cmd_show(args: argparse.Namespace) -> int:
    from .cli_errors import at_least_one

    at_least_one(args, "sample")  # 0 or fewer rows read would report nothing, as fine
    print(show(load_card(args.card), args.split, args.sample))
    return 0


def _cmd_smooth(args: argparse.Namespace) -> int:
    """SmPO soft labels (mmalign/diffusion/smooth.py): score, order, label, save."""
    from .config import InputError
    from .diffusion.data import open_pairs
    from .diffusion.smooth import smooth_dataset
    from .rewards import split_name

    split_name(args.scorer)  # an unknown scorer fails before the data is read
    from .rewards.files import parse_scorer_paths

    files = parse_scorer_paths(args.scorer_path, [args.scorer]).get(args.scorer, {})
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    from .toy.cache import split_to_read

    split = split_to_read(args.data, args.split)  # toy data: refused, not ignored
    rows, report = open_pairs(args.data, split, max_samples=args.max_samples, key="DATA")
    if report.num_skipped:
        print(f"mmalign: {report}")
    if len(rows) == 0:
        raise InputError(f"{args.data}: no reward-scorable image pairs ({report})")
    try:
        result = smooth_dataset(
            rows, args.scorer, args.out, batch_size=args.batch_size, device=args.device,
            files=files,
        )  # fmt: skip
    except ValueError as err:  # equal rewards everywhere, a non-finite reward, ...
        raise InputError(f"mmalign data smooth: {err}") from None
    print(result)
    print(f"wrote {args.out} (columns label, reward_chosen, reward_rejected, smooth_swapped)")
    return 0


def users_source(
    source: str, split: str | None, max_rows: int | None, pickapic_root: str | None
) -> tuple[Any, Any, dict[str, Any]]:
    """(rows, the reader's ValidationReport, what was read) for `data users SOURCE`: ties kept
    (label 0.5), to be counted per user. `pickapic:<split>` reads Pick-a-Pic v2 from
    `--pickapic-root`, `$MMALIGN_PICKAPIC` or the hub, as `eval accuracy --data` does; any
    other SOURCE opens as a recipe's `data.path` does (`open_pairs`: a saved PreferencePair
    folder, Pick-a-Pic shards or a saved copy, a hub id, toy:<kind>)."""
    from .config import InputError
    from .data.saved import require_rows

    family, _, rest = source.partition(":")
    if family == "pickapic":
        from .data.pickapic import load_pickapic
        from .data.prompts import PICKAPIC_FLAG, pickapic_key, pickapic_source

        if not rest:
            raise InputError("SOURCE pickapic: name the split, e.g. pickapic:train")
        if split is not None and split != rest:
            raise InputError(f"--split {split} and SOURCE {source} name two splits; give one")
        where = pickapic_source(pickapic_root)
        rows, report = load_pickapic(where, rest, tie_policy="half", max_rows=max_rows,
                                     key=pickapic_key(pickapic_root, PICKAPIC_FLAG))  # fmt: skip
        require_rows(rows, report, "SOURCE", source)
        return rows, report, {"source": source, "path": where, "split": rest}
    if pickapic_root is not None:
        raise InputError(f"--pickapic-root is for SOURCE pickapic:<split>, not {source}")
    from .diffusion.data import open_pairs
    from .toy.cache import split_to_read

    split = split_to_read(source, split)  # toy data: refused, not ignored
    rows, report = open_pairs(source, split, max_samples=max_rows, tie_policy="half",
                              key="SOURCE")  # fmt: skip
    return rows, report, {"source": source, "split": split}


def users_out(out: str, overwrite: bool, source: str) -> tuple[Path, list[str]]:
    """`--out` of `data users` and what of an earlier build in it `--overwrite` replaces:
    refused when it holds one, unless `--overwrite`, as `mmalign toy data` does. A SOURCE
    inside that earlier build is refused: it would be deleted before it is written again."""
    from .config import InputError
    from .data.users import SPLITS, WRITTEN

    target = Path(out).expanduser()
    if target.exists() and not target.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    earlier = [name for name in WRITTEN if (target / name).exists()]
    if not earlier:
        return target, []
    if not overwrite:
        raise InputError(
            f"--out {out} already holds an earlier build ({', '.join(earlier)}); give "
            "--overwrite to replace it, or another --out"
        )
    read, root = Path(source).expanduser().resolve(), target.resolve()
    splits = [root / name for name in SPLITS]
    if read == root or any(read == folder or folder in read.parents for folder in splits):
        raise InputError(
            f"SOURCE {source} is the earlier build in --out {out} that --overwrite replaces; "
            "give another --out"
        )
    return target, earlier


def replace_earlier(out: Path, earlier: list[str]) -> None:
    """Delete the earlier build's `earlier` entries of `out`, said on stderr with what else
    is there and stays (as `mmalign toy data --overwrite` says it); called once the new
    build is planned, so a refused one leaves the earlier build as it was."""
    from .data.users import WRITTEN
    from .files import replace_earlier_build

    if not earlier:
        return
    # what else lives in the split folders goes with them (`data user-embed DIR/heldout`
    # writes DIR/heldout/user_embeddings): named, never deleted unsaid
    saved = ("data-", "dataset_info.json", "state.json")
    inside = sorted(f"{name}/{q.name}" for name in earlier if (out / name).is_dir()
                    for q in (out / name).iterdir() if not q.name.startswith(saved))  # fmt: skip
    replace_earlier_build(out, earlier, written=WRITTEN, inside=inside)


def _cmd_users(args: argparse.Namespace) -> int:
    """PPD's per-user pairs (Dang et al. CVPR 2025): users with enough decided pairs, split
    by user into DIR/train and DIR/heldout (mmalign/data/users.py)."""
    from .cli_errors import at_least_one
    from .data.users import check_heldout, describe, plan_user_splits, write_user_splits

    at_least_one(args, "min_pairs", "max_rows")
    check_heldout(args.heldout_users, args.heldout_share)
    out, earlier = users_out(args.out, args.overwrite, args.source)  # refused before the read
    rows, report, read = users_source(args.source, args.split, args.max_rows, args.pickapic_root)
    if report.num_skipped:
        print(f"mmalign: {report}")
    read.update(max_rows=args.max_rows, reader={"rows": report.total, "kept": report.kept,
                                                "skipped": dict(report.skipped)})  # fmt: skip
    plan = plan_user_splits(rows, min_pairs=args.min_pairs, heldout_users=args.heldout_users,
                            heldout_share=args.heldout_share, seed=args.seed)  # fmt: skip
    replace_earlier(out, earlier)
    print(describe(write_user_splits(rows, plan, out, read=read)))
    return 0


EMBEDDING_FILES = (
    "user_embeddings.safetensors and user_embeddings.json"  # vlm.user_embed.write_embeddings
)
USER_PAIRS = (
    "a folder of per-user pairs: a saved PreferencePair folder with a user_id column (`mmalign "
    "data users SOURCE --out DIR` writes DIR/train and DIR/heldout) or a `mmalign toy data "
    "users --out DIR` folder"
)


def user_embed_paths(data: str, out: str | None) -> tuple[Path, Path, Path]:
    """(DATA's folder, its saved pairs, the output folder) of `data user-embed`, checked before
    the VLM runs: DATA is a saved PreferencePair folder with a user_id column (as `mmalign data
    users` writes DIR/train and DIR/heldout) or a `mmalign toy data users --out DIR` folder (or
    its `pairs/`), and `--out` a folder (default DATA/user_embeddings) that gets the two
    embedding files."""
    from .config import InputError

    if data.startswith("toy:"):  # built in the cache: its folder is no place for the output
        raise InputError(
            f"{data}: user-embed reads {USER_PAIRS} (a PPD recipe on data.path: {data} embeds its "
            "users itself)"
        )
    folder = Path(data).expanduser()
    if not folder.exists():
        raise InputError(f"{data}: no such folder; user-embed reads {USER_PAIRS}")
    if not folder.is_dir():
        raise InputError(f"{data} is a file; user-embed reads {USER_PAIRS}")
    pairs = folder / "pairs" if (folder / "pairs").is_dir() else folder
    target = Path(out).expanduser() if out else folder / "user_embeddings"
    if target.exists() and not target.is_dir():
        raise InputError(f"--out {out} is a file: --out is a folder, for {EMBEDDING_FILES}")
    if not target.exists() and target.suffix in (".safetensors", ".json"):
        raise InputError(
            f"--out {out}: --out is a folder, for {EMBEDDING_FILES}; give the folder "
            f"(e.g. {target.with_suffix('')})"
        )
    return folder, pairs, target


def _cmd_user_embed(args: argparse.Namespace) -> int:
    """PPD user embeddings (Dang et al. CVPR 2025): one per user, from its first --shots pairs."""
    from .config import InputError
    from .data.schema import load_pairs
    from .devices import device_options
    from .vlm.load import VLMRef
    from .vlm.user_embed import (
        PROMPT_FORMAT_VERSION,
        cached_user_embeddings,
        examples_from_pairs,
        write_embeddings,
    )

    device, dtype = device_options(args)  # a device the machine lacks: refused first
    folder, pairs, out = user_embed_paths(args.data, args.out)
    try:
        rows = load_pairs(pairs)
    except FileNotFoundError:  # `datasets`' own, no errno: it ended in a traceback
        raise InputError(f"{args.data}: no saved pairs dataset in it; user-embed reads "
                         f"{USER_PAIRS}") from None  # fmt: skip
    examples, ties = examples_from_pairs(rows)
    if ties:
        print(f"mmalign: skipped {plural(ties, 'tied pair')} (label 0.5): no preference to show")
    vlm = VLMRef(args.model, dtype=dtype, device=device)  # loaded only if not cached
    embs, hit = cached_user_embeddings(
        vlm, examples, shots=args.shots, layer=args.layer, pooling=args.pooling,
        batch_size=args.batch_size,
    )  # fmt: skip
    # the prompt format's version too: embeddings of another version are another encoding
    # and the encoder's dtype (a training run embeds its new users the same way)
    meta = {"model": args.model, "shots": args.shots, "layer": args.layer,
            "pooling": args.pooling, "data": str(folder), "cached": hit,
            "prompt_format": PROMPT_FORMAT_VERSION, "dtype": dtype}  # fmt: skip
    path = write_embeddings(embs, out, meta)
    print(f"wrote {plural(len(embs), 'user embedding')} to {path} "
          f"({'from cache' if hit else 'computed'})")  # fmt: skip
    return 0


def register(sub: Any) -> None:
    """Add `mmalign data` (once) with its `show`, `smooth`, `users` and `user-embed` actions."""
    actions = group_actions(sub, "data")
    p = actions.add_parser("show", help="what a dataset card (datasets/*.yaml) resolves to")
    p.add_argument("card", help="a card file, or a name in datasets/ (e.g. toy_pairs)")
    p.add_argument("--split", default=None, help="split to open (default: the card's; none "
                   "for toy data, which is built, not split)")  # fmt: skip
    p.add_argument("--sample", type=int, default=64, help="rows to read and check (default 64)")
    p.set_defaults(func=_cmd_show)
    p = actions.add_parser("smooth", help="SmPO soft labels for image pairs from a reward model")
    p.add_argument("data", help="image pairs: a saved dataset folder, a hub id or toy:<kind>")
    p.add_argument("--scorer", default="pickscore", help="reward scorer (default pickscore; "
                   "toy:fidelity, toy:user:<id>, ...)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder (a saved dataset)")
    p.add_argument("--split", default=None, help="split to read (default train; none for toy "
                   "data, which is built, not split)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32, help="pairs per scorer call")
    p.add_argument("--device", default=None, help="the scorer's device (default: its own)")
    from .rewards.files import HELP as SCORER_PATH_HELP

    p.add_argument("--scorer-path", action="append", metavar="NAME=PATH", help=SCORER_PATH_HELP)
    p.add_argument("--max-samples", type=int, default=None)
    p.set_defaults(func=_cmd_smooth)
    p = actions.add_parser(
        "users", help="PPD: per-user pairs, users with enough pairs split into train / held out"
    )
    from .data.users import DEFAULT_HELDOUT_SHARE, DEFAULT_MIN_PAIRS, PPD_SHOTS

    p.add_argument("source", help="pairs with a user_id: pickapic:<split>, Pick-a-Pic shards or "
                   "a saved copy, a hub id, a saved pair folder, toy:users")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder: DIR/train, DIR/heldout and "
                   "DIR/summary.json")  # fmt: skip
    p.add_argument("--min-pairs", type=int, default=DEFAULT_MIN_PAIRS,
                   help=f"keep users with at least this many decided (untied) pairs (default "
                   f"{DEFAULT_MIN_PAIRS}: ppd.shots {PPD_SHOTS} to embed a user, one more to "
                   "evaluate a held-out user on)")  # fmt: skip
    held = p.add_mutually_exclusive_group()
    held.add_argument("--heldout-users", type=int, default=None,
                      help="hold out this many of the kept users (0: none)")  # fmt: skip
    held.add_argument("--heldout-share", type=float, default=None,
                      help=f"hold out this share of the kept users (default "
                      f"{DEFAULT_HELDOUT_SHARE}, at least one user)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the user split (default 0)")
    p.add_argument("--split", default=None, help="split of SOURCE to read (default train; none "
                   "for toy data, which is built, not split)")  # fmt: skip
    p.add_argument("--max-rows", type=int, default=None, help="read at most this many rows")
    from .data.prompts import PICKAPIC_FLAG

    p.add_argument(PICKAPIC_FLAG, default=None, help="pickapic:<split>: a local Pick-a-Pic v2 "
                   "folder (default $MMALIGN_PICKAPIC, else the hub)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier build in --out (else refused)")  # fmt: skip
    p.set_defaults(func=_cmd_users)
    p = actions.add_parser("user-embed", help="PPD: one VLM user embedding per user of the pairs")
    p.add_argument("data", help="per-user pairs: a saved pair folder with user_id (`mmalign data "
                   "users --out DIR`'s DIR/heldout or DIR/train) or a `mmalign toy data users` "
                   "folder")  # fmt: skip
    p.add_argument("--model", default="toy:vlm", help="VLM folder or hub id (default toy:vlm)")
    p.add_argument("--shots", type=int, default=4, help="examples per user (default 4)")
    p.add_argument("--layer", type=int, default=-2, help="hidden state to pool (default -2)")
    p.add_argument(
        "--pooling", default="mean", choices=["mean", "last", "contrast", "contrast_tokens"],
        help="mean / last token, or the preferred minus the dispreferred image's states",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=8, help="users per forward pass")
    p.add_argument("--out", default=None, help="output folder (default DATA/user_embeddings)")
    from .devices import add_device_options

    add_device_options(p, "the VLM")
    p.set_defaults(func=_cmd_user_embed)
