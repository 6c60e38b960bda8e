"""Open VLM preference data in any format mmalign reads, as rows the VLM collator consumes.

`open_vlm_pairs(path, split)` takes a JSON / JSONL file, a folder saved with `save_to_disk`,
a folder holding one JSON file (and its images), parquet shards or a hub id, or `toy:<kind>`
(a toy dataset, built once and cached). `format` names the reader; None detects it from the
fields:

- `llava`: a `conversations` field (LLaVA conversation format), or RLHF-V's `text` field (a
  JSON object with question, chosen and rejected);
- `realign`: a retrieved-image field (`image_neg`, `retrieved_image`, ...) or `y_w` / `y_l`,
  or `question` + `chosen` + `rejected` without MMSafe-PO's metadata;
- `mmsafe`: `question` (or, without a `label` column, `prompt`: the released copy) with
  `entity_type` (or `type` + `entity`), MMSafe-PO's fields;
- `trl`: an `images` column, or conversational (message list) prompt / chosen / rejected;
  a JSON file of plain `prompt` / `chosen` / `rejected` strings is read as TRL standard too;
- `pairs`: a saved PreferencePair dataset (string `prompt`, `chosen`, `rejected`; one
  `image`; checked by `validate_rows`, so `label`, `blind`, `retrieved_image` pass through).

Image paths are resolved inside `image_root` (default: the JSON file's folder, or the dataset
folder) and never outside it. Every skipped row is counted in the returned report.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..cli_errors import finite_float
from ..subcommands import group_actions

FORMATS = ("mmsafe", "realign", "trl", "llava", "pairs")


def detect_format(fields: Sequence[str], sample: Mapping[str, Any] | None = None,
                  *, saved: bool = False) -> str:  # fmt: skip
    """The reader for records with these `fields` (see the module docstring)."""
    from ..data.llava_format import rlhf_v_text
    from ..data.realign import RETRIEVED_KEYS

    keys = set(fields)
    sample = sample or {}
    plain = {"prompt", "chosen", "rejected"} <= keys and isinstance(sample.get("prompt"), str)
    mmsafe = "entity_type" in keys or {"type", "entity"} <= keys  # MMSafe-PO's metadata
    # the released MMSafe-PO (hub) asks its question in `prompt`; rows mmalign wrote (a saved
    # PreferencePair set) carry the metadata too, but always with a `label` column
    if mmsafe and "prompt" in keys and "label" not in keys:
        return "mmsafe"
    if saved and plain and "images" not in keys:  # PreferencePair rows (e.g. the rDPO builder's)
        return "pairs"
    if keys & set(RETRIEVED_KEYS) or {"y_w", "y_l"} & keys:
        return "realign"
    if "conversations" in keys or ("text" in keys and rlhf_v_text(sample.get("text"))):
        return "llava"  # (RLHF-V's release: a `text` column holding a JSON object)
    if "question" in keys and mmsafe:
        return "mmsafe"
    if {"question", "chosen", "rejected"} <= keys:
        return "realign"
    messages = any(isinstance(sample.get(k), list) for k in ("prompt", "chosen", "rejected"))
    if "images" in keys or messages:
        return "trl"
    if {"prompt", "chosen", "rejected"} <= keys:
        return "pairs" if saved else "trl"
    raise ValueError(
        f"cannot tell the format of data with fields {sorted(keys)[:20]}: these are no "
        "preference pairs mmalign reads (MMSafe-PO, Re-Align, TRL, LLaVA conversations or "
        "PreferencePair rows; see docs/vlm.md)"
    )


def _readers() -> dict[str, Callable[..., Any]]:
    from ..data.llava_format import llava_pairs
    from ..data.mmsafe import mmsafe_pairs
    from ..data.realign import realign_pairs
    from ..data.trl_format import trl_pairs

    return {"mmsafe": mmsafe_pairs, "realign": realign_pairs, "trl": trl_pairs,
            "llava": llava_pairs}  # fmt: skip


def _raw_images(ds: Any) -> Any:
    """The dataset with its image columns left encoded ({"bytes", "path"}): the readers check
    the bytes themselves and count what does not decode instead of crashing on it."""
    from datasets import Features, Image, List

    def raw(feature: Any) -> Any:
        if isinstance(feature, Image):
            return Image(decode=False)
        if isinstance(feature, List) and isinstance(feature.feature, Image):
            return List(Image(decode=False))
        return feature

    return ds.cast(Features({k: raw(v) for k, v in ds.features.items()}))


def _check_format(format: str | None) -> None:
    if format is not None and format not in FORMATS:
        from ..suggest import did_you_mean

        raise ValueError(f"unknown VLM data format {format!r}; {did_you_mean(format, FORMATS)}")


def _single_json(folder: Path) -> Path | None:
    files = sorted(p for p in folder.iterdir() if p.suffix in (".json", ".jsonl")
                   and p.name not in ("dataset_info.json", "state.json"))  # fmt: skip
    return files[0] if len(files) == 1 else None


def _refuse_folder(local: Path, path: str, key: str, split: str) -> None:
    """An InputError where the folder `local` holds no VLM data: `folder_kind.folder_problem`
    (empty, a training run, a toy or prism-mcts output folder), or saved image pairs."""
    from ..config import InputError
    from ..data.folder_kind import folder_problem, kind_problem, pairs_kind

    wants = "a model.kind: vlm recipe" if key == "data.path" else "this command"
    problem = folder_problem(local, key) or kind_problem(
        pairs_kind(local, split), "text", key, path, wants)  # fmt: skip
    if problem is not None:
        raise InputError(problem)


def open_vlm_pairs(
    path: str | Path,
    split: str = "train",
    *,
    format: str | None = None,
    image_root: str | Path | None = None,
    max_samples: int | None = None,
    strict: bool = False,
    key: str = "data",
) -> tuple[Any, Any]:
    """(PreferencePair `Dataset`, `ValidationReport`) from any supported source and format.
    `key`: where the user named `path`, for messages (a recipe's `data.path`; a command's
    DATA). One saved Dataset (not a DatasetDict) is one split, and `split` must be that one
    (`check_saved_split`)."""
    from datasets import Dataset, load_dataset

    from ..data.pickapic_files import check_saved_split
    from ..data.saved import load_saved, require_rows
    from ..data.schema import validate_rows
    from ..data.vlm_rows import read_records
    from ..hub import hub_errors, require_one
    from ..toy.cache import TOY_PREFIX, toy_pairs

    _check_format(format)
    path = os.path.expanduser(str(path))  # `data.path: ~/x.json`: no shell expanded it
    toy = path.startswith(TOY_PREFIX)  # built for the run, whatever split it is named
    if toy:
        if format not in (None, "pairs"):
            raise ValueError(f"{path} is a toy PreferencePair dataset; format must be 'pairs'")
        path = str(toy_pairs(path[len(TOY_PREFIX) :], {}))
        format = "pairs"
    local = Path(path)
    _refuse_folder(local, path, key, split)
    if (
        local.is_dir()
        and (single := _single_json(local)) is not None
        and not ((local / "state.json").is_file() or (local / "dataset_dict.json").is_file())
    ):
        local = single  # a folder with one JSON file and its images
    if local.is_file():
        records = read_records(local, split=split)
        require_rows(records, None, key, local)  # (no fields to tell a format from)
        fields = list(dict.fromkeys(k for r in records[:100] for k in r))
        chosen = format or detect_format(fields, records[0] if records else None)
        if chosen == "pairs":
            chosen = "trl"  # plain prompt/chosen/rejected strings in JSON: TRL's standard form
        rows, report = _readers()[chosen](records, image_root=image_root or local.parent,
                                          where=str(local), max_samples=max_samples,
                                          strict=strict)  # fmt: skip
        require_rows(rows, report, key, local)
        return rows, report
    saved = local.is_dir() and ((local / "state.json").is_file()
                                or (local / "dataset_dict.json").is_file())  # fmt: skip
    if saved:
        ds = load_saved(path)  # (a folder saved from 0 rows: refused below, by key)
        if not isinstance(ds, Dataset):
            if split not in ds:
                raise ValueError(f"{path} has splits {list(ds)}; asked for split {split!r}")
            ds = ds[split]
        elif not toy:  # one saved split: the one asked for, never the whole file instead
            check_saved_split(ds, split, path)
    elif local.exists() or ("/" in path and not path.startswith((".", "/"))
                            and local.suffix not in (".json", ".jsonl")):  # fmt: skip
        # parquet shards in a folder, or a hub id (owner/name)
        if not local.exists():
            require_one(path, key, repo_type="dataset")
        with hub_errors(path, key, repo_type="dataset"):
            ds = load_dataset(path, split=split)
    else:
        raise FileNotFoundError(f"{path}: no such file, folder or hub id (owner/name)")
    if max_samples is not None:
        ds = ds.select(range(min(max_samples, len(ds))))
    require_rows(ds, None, key, path)  # before its (absent) rows are read for the format
    # the text fields only: decoding row 0's images would read a path before it is checked
    texts = [c for c in ("prompt", "chosen", "rejected", "text") if c in ds.column_names]
    sample = ds.select_columns(texts)[0] if len(ds) else None
    chosen = format or detect_format(ds.column_names, sample, saved=True)
    if chosen == "pairs":
        missing = [c for c in ("prompt", "chosen", "rejected") if c not in ds.column_names]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; columns: {ds.column_names}")
        checked, report = validate_rows(ds, "text", strict=strict)
        report.name = path
        require_rows(checked, report, key, path)
        return checked, report
    root = image_root or (local if local.is_dir() else None)
    rows, report = _readers()[chosen](_raw_images(ds), image_root=root, where=path,
                                      strict=strict)  # fmt: skip
    require_rows(rows, report, key, path)
    return rows, report


# ---------------------------------------------------------------------- `mmalign data realign`


def _cmd_realign(args: argparse.Namespace) -> int:
    from ..data.schema import to_pil_image, to_rgb
    from ..devices import device_options
    from ..toy.cache import split_to_read
    from ..words import plural
    from .load import load_vlm
    from .realign import build_realign, check_realign_out, realign_dataset, replace_realign
    from .realign_embed import (
        BagOfWordsEmbedder,
        OpenClipEmbedder,
        TokenEmbeddingEmbedder,
        require_clip_weights,
    )

    device, dtype = device_options(args)  # a device the machine lacks: refused first
    split = split_to_read(args.data, args.split)  # toy data: refused, not ignored
    earlier = check_realign_out(args.out, args.overwrite)  # before the model loads
    if args.clip:  # its weights, before a VLM loads for a minute only to be refused after
        require_clip_weights(args.clip, args.clip_pretrained)
    vlm = load_vlm(args.model, dtype=dtype, device=device, key="--model")
    rows, report = open_vlm_pairs(args.data, split, image_root=args.image_root,
                                  max_samples=args.max_samples)  # fmt: skip
    print(report)
    pool = None
    if args.images:
        folder = Path(args.images)
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp")
        )
        if not files:
            raise FileNotFoundError(f"--images {folder}: no image files")
        pool = [to_rgb(to_pil_image(p)) for p in files]
    image_embedder = (
        OpenClipEmbedder(args.clip, args.clip_pretrained, device=str(device)) if args.clip else None
    )
    text_embedder = BagOfWordsEmbedder() if args.text_embedder == "bow" else (
        TokenEmbeddingEmbedder(vlm))  # fmt: skip
    result = build_realign(vlm, rows, pool, image_embedder=image_embedder,
                           text_embedder=text_embedder, k=args.k, threshold=args.threshold,
                           chosen=args.chosen, batch_size=args.batch_size)  # fmt: skip
    print(result.report)
    ds = realign_dataset(result)
    replace_realign(args.out, earlier)
    ds.save_to_disk(args.out)
    summary = {
        "rows": len(ds), "read": result.report.total, "skipped": result.report.skipped,
        "model": vlm.source, "data": args.data, "k": args.k, "threshold": args.threshold,
        "mean_similarity": sum(result.similarities) / max(1, len(result.similarities)),
    }  # fmt: skip
    Path(args.out, "realign_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"re-align pairs: {Path(args.out).resolve()} ({plural(len(ds), 'row')})")
    return 0


def register(sub: Any) -> None:
    """`mmalign data realign`: build Re-Align rDPO pairs with a VLM (adds the `data` command
    when no one has yet)."""
    actions = group_actions(sub, "data")
    p = actions.add_parser("realign", help="Re-Align rDPO pairs: masked answers re-filled by "
                           "the VLM shown a retrieved similar image")  # fmt: skip
    p.add_argument("--model", required=True, help="VLM folder, hub id or toy:vlm")
    p.add_argument("--data", required=True, help="rows with prompt + image (+ chosen): any "
                   "format open_vlm_pairs reads, e.g. toy:vqa or a JSON file")  # fmt: skip
    p.add_argument("--split", default=None, help="split to read (default train; none for toy "
                   "data, which is built, not split)")  # fmt: skip
    p.add_argument("--image-root", default=None, help="folder the data's image paths are in")
    p.add_argument("--images", default=None, help="image pool folder (default: the data's "
                   "own images)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder (a saved dataset)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier build in --out")
    p.add_argument("--k", type=int, default=3, help="retrieved images tried per row")
    p.add_argument("--threshold", type=finite_float, default=0.95, help="keep a fill whose cosine "
                   "to the chosen answer is below this")  # fmt: skip
    p.add_argument(
        "--chosen",
        choices=("data", "model"),
        default="data",
        help="y_w: the data's chosen answer, or the model's own answer",
    )
    p.add_argument(
        "--text-embedder",
        choices=("bow", "lm"),
        default="bow",
        help="bow: hashed bag of words; lm: the VLM's centred mean input embeddings",
    )
    p.add_argument("--clip", default=None, help="retrieve with this open_clip model instead "
                   "of the VLM's vision encoder, e.g. ViT-B-32")  # fmt: skip
    p.add_argument("--clip-pretrained", default="openai", help="open_clip tag or local file")
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    from ..devices import add_device_options

    add_device_options(p, "the VLM (--clip's model: on the device, in float32)")
    p.set_defaults(func=_cmd_realign)
