"""`mmalign eval dense`: a dense reward head against ground-truth scores and heatmaps.

The metrics of RAHF (Liang et al., CVPR 2024, Sec. 5.2, Tables 1-2) and ImageDoctor (Guo et
al. 2025): per score, PLCC (Pearson) and SRCC (Spearman, ties at their average rank) over the
images; per heatmap, the MSE over all pixels of all images, the MSE on the images whose
ground truth is empty (no flaw: the prediction should be zero there), and CC, the Pearson
correlation between predicted and true map of one image, averaged over the images whose
ground truth is not empty (CC is undefined on an empty map; a constant prediction counts 0).
An HTML report shows, for a sample of images, each heatmap predicted beside the ground truth.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image as PILImage
from tqdm.auto import tqdm

from ..config import InputError
from ..data.dense import DENSE_SCORES, DenseRows
from ..data.schema import HEATMAP_CHANNELS, to_rgb

DEFAULT_SPLIT = "test"  # RichHF-18K's test split (of train / dev / test), a DatasetDict's "test"


def finite_or_null(value: Any) -> Any:
    """`value` with every NaN or infinite float, at any depth, as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    return value


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two 1-D tensors; 0 when either is constant."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denom = float(x.norm() * y.norm())
    return float((x * y).sum()) / denom if denom > 0 else 0.0


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1, tied values sharing their average rank (as scipy.stats.rankdata - 1)."""
    _, inverse, counts = torch.unique(x.double(), return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    return (ends - (counts.double() + 1) / 2)[inverse]


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    return pearson(ranks(x), ranks(y))


def heatmap_metrics(pred: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """MSE (all images), MSE on empty-truth images, mean CC on non-empty ones [B,H,W]."""
    flat_p, flat_t = pred.flatten(1).double(), true.flatten(1).double()
    empty = flat_t.amax(1) <= 0
    per_image = (flat_p - flat_t).pow(2).mean(1)
    ccs = [pearson(flat_p[i], flat_t[i]) for i in (~empty).nonzero()[:, 0].tolist()]
    return {
        "mse": float(per_image.mean()),
        "mse_empty": float(per_image[empty].mean()) if bool(empty.any()) else float("nan"),
        "cc": float(np.mean(ccs)) if ccs else float("nan"),
        "images_with_flaws": len(ccs),
        "images_empty": int(empty.sum()),
    }


def predict(scorer: Any, rows: DenseRows, batch_size: int) -> tuple[dict, dict, list[int]]:
    """(predictions, truths, row indices): scores [N] and heatmaps [N,H,W] for each key. Maps
    are compared on the images' own grid, so every row must have one image size (several
    sizes are an error naming them)."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for i in range(len(rows)):
        by_size.setdefault(rows[i].image.size, []).append(i)
    if len(by_size) > 1:
        raise InputError(f"dense eval: images of several sizes {sorted(by_size)}; resize first")
    order = next(iter(by_size.values())) if by_size else []
    pred: dict[str, list[torch.Tensor]] = {k: [] for k in (*DENSE_SCORES, *HEATMAP_CHANNELS)}
    true: dict[str, list[torch.Tensor]] = {k: [] for k in pred}
    for start in tqdm(range(0, len(order), batch_size), desc="dense eval", unit="batch"):
        batch = [rows[i] for i in order[start : start + batch_size]]
        out = scorer.dense([r.image for r in batch], [r.prompt for r in batch])
        for key in DENSE_SCORES:
            pred[key].append(out[key].float())
            true[key].append(torch.tensor([r.scores[key] for r in batch]))
        for c, key in enumerate(HEATMAP_CHANNELS):
            pred[key].append(out[key][:, 0].float())
            true[key].append(torch.from_numpy(np.stack([r.heatmaps[c] for r in batch])))
    cat = lambda d: {k: torch.cat(v) for k, v in d.items()}  # noqa: E731
    return cat(pred), cat(true), order


def evaluate_dense(scorer: Any, rows: DenseRows, *, batch_size: int = 64) -> dict[str, Any]:
    if len(rows) == 0:
        raise InputError("dense eval: the data has no rows")
    pred, true, order = predict(scorer, rows, batch_size)
    scores = {
        k: {"plcc": pearson(pred[k], true[k]), "srcc": spearman(pred[k], true[k]),
            "mse": float((pred[k] - true[k]).pow(2).mean())}
        for k in DENSE_SCORES
    }  # fmt: skip
    maps = {k: heatmap_metrics(pred[k], true[k]) for k in HEATMAP_CHANNELS}
    return {"rows": len(order), "scores": scores, "heatmaps": maps,
            "_pred": pred, "_true": true, "_order": order}  # fmt: skip


class DenseSplit(NamedTuple):
    """What `mmalign eval dense` reads: `open_dense(data, open_as)`; `split` is the split the
    report names (None: the data read whole, or built), `read` says so in words."""

    data: str
    open_as: str | None
    split: str | None
    read: str


def resolve_split(data: str, split: str | None) -> DenseSplit:
    """What `--data data --split split` (None: not given) reads: `DEFAULT_SPLIT` where the data
    has splits, the data whole where it has none.

    - a saved DatasetDict, or a folder of split-named `save_to_disk` folders (the splits
      `pickapic.saved_splits` lists, as the Pick-a-Pic reader does): the split asked for, else
      "test"; a split it lacks is an InputError naming it and the splits it has;
    - one saved Dataset (not split): the folder whole when no split is asked for, as the split
      its state records if it records one; a split asked for must be the one it holds
      (`open_dense`: `check_saved_split`);
    - a RichHF-18K folder: `<split>.tfrecord`, "test" by default; one `.tfrecord` file: whole
      (a split asked for must be its name);
    - toy data is built, not split: a `--split` is refused rather than ignored."""
    from ..data.pickapic_files import saved_splits
    from ..suggest import closest
    from ..toy.cache import TOY_PREFIX, split_to_read

    if data.startswith(TOY_PREFIX):  # a --split given is refused (`split_to_read`)
        split_to_read(data, split, hint="toy:flaws:heldout: the held-out prompts, seed 1; "
                      "toy:flaws: the training ones")  # fmt: skip
        return DenseSplit(data, None, None, "built: toy data has no splits")
    path = Path(data).expanduser()
    wanted = split or DEFAULT_SPLIT
    named = DenseSplit(data, wanted, wanted, f"split {wanted!r}")
    if path.is_file():  # one .tfrecord, read whole: a split is its name or none
        if split is not None and path.stem != split:
            raise InputError(f"--split {split}: {path} is one file, read whole; give its "
                             "folder to read a split")  # fmt: skip
        return DenseSplit(data, None, split, f"the whole file {path.name}")
    if not path.is_dir():  # `open_dense` says what it expected
        return named
    if (path / "state.json").is_file():  # one Dataset.save_to_disk
        if split is not None:
            return named
        from datasets import load_from_disk

        recorded = load_from_disk(str(path)).split  # a NamedSplit, or None
        if recorded is None:
            return DenseSplit(data, None, None, "the whole folder: a dataset saved without splits")
        name = str(recorded)
        return DenseSplit(data, name, name, f"the whole folder: a dataset saved as split {name!r}")
    if (path / "dataset_dict.json").is_file() or any(path.glob("*/state.json")):
        splits = saved_splits(path)
        if wanted not in splits:
            default = "" if split is not None else " (--split's default)"
            guess = closest(wanted, splits)
            hint = f"; did you mean {guess!r}?" if guess is not None else "."
            raise InputError(
                f"dense data: {path} has no split {wanted!r}{default}: its splits are "
                f"{', '.join(splits)}{hint} Name one with --split."
            )
        if not (path / "dataset_dict.json").is_file():  # the split's own folder, read whole
            return DenseSplit(str(path / wanted), None, wanted, f"split {wanted!r}")
    return named


# ------------------------------------------------------------------------- HTML report


def _png(array: np.ndarray, scale: int) -> str:
    image = PILImage.fromarray(np.clip(array * 255, 0, 255).astype(np.uint8))
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), PILImage.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _embedded(array: np.ndarray) -> str:
    """An image [H,W,3] in [0,1] as the report embeds it: a small one (the toy world's 32 px)
    enlarged to about 160 px; a larger one as report.html's thumbnail (longest side
    `report.THUMB`, 256 px)."""
    from .report import THUMB, thumbnail_url

    if max(array.shape[:2]) <= THUMB:
        return _png(array, max(1, 160 // max(array.shape[:2])))
    return thumbnail_url(PILImage.fromarray(np.clip(array * 255, 0, 255).astype(np.uint8)))


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The image [H,W,3] in [0,1] darkened, with the heatmap [H,W] in red on top."""
    h = np.clip(heat, 0, 1)[..., None]
    red = np.zeros_like(image)
    red[..., 0] = 1.0
    return image * 0.6 * (1 - h) + red * h


def _card(row: Any, j: int, pred: dict, true: dict) -> str:
    """One image's card: the image, then per heatmap channel the truth and the prediction."""
    image = np.asarray(to_rgb(row.image), dtype=np.float32) / 255
    imgs = [("image", _embedded(image))]
    for key in HEATMAP_CHANNELS:
        for side, maps in (("truth", true), ("predicted", pred)):
            drawn = overlay(image, maps[key][j].numpy())
            imgs.append((f"{key} {side}", _embedded(drawn)))
    scores = " ".join(
        f"{k[:5]} {float(pred[k][j]):.2f}/{float(true[k][j]):.2f}" for k in DENSE_SCORES
    )
    figs = "".join(f'<figure><img src="{s}"><figcaption>{t}</figcaption></figure>' for t, s in imgs)
    title = f"{html.escape(row.prompt)} <small>({html.escape(row.name)})</small>"
    return (
        f'<div class="card"><p>{title}</p>{figs}'
        f"<p><small>predicted/true: {scores}</small></p></div>"
    )


def write_report(result: dict[str, Any], rows: DenseRows, out: Path, sample: int) -> Path:
    """`dense_report.html`: the metrics, and for the first `sample` images a card with the image
    and, per heatmap channel, the truth and the prediction over it; an image larger than 256 px
    goes in as a thumbnail, its overlays drawn at full size and shrunk with it."""
    pred, true, order = result["_pred"], result["_true"], result["_order"]
    cells = [_card(rows[order[j]], j, pred, true) for j in range(min(sample, len(order)))]
    table = "".join(
        f"<tr><td>{k}</td><td>{v['plcc']:.3f}</td><td>{v['srcc']:.3f}</td>"
        f"<td>{v['mse']:.4f}</td></tr>"
        for k, v in result["scores"].items()
    )
    maps = "".join(
        f"<tr><td>{k}</td><td>{v['mse']:.4f}</td><td>{v['mse_empty']:.4f}</td><td>{v['cc']:.3f}"
        f"</td><td>{v['images_with_flaws']}</td></tr>"
        for k, v in result["heatmaps"].items()
    )
    read = f" ({html.escape(str(result['read']))})" if result.get("read") else ""
    page = f"""<!doctype html><meta charset="utf-8"><title>dense eval</title>
<style>body{{font-family:sans-serif}} .card{{display:inline-block;margin:6px;padding:6px;
border:1px solid #ccc;max-width:900px}} figure{{display:inline-block;margin:2px}}
figcaption{{font-size:11px;text-align:center}} td,th{{padding:2px 8px}}</style>
<h1>Dense reward head: {html.escape(str(result.get("model", "")))}</h1>
<p>data {html.escape(str(result.get("data", "")))}{read}, {result["rows"]} images. Heatmaps in red
over the darkened image: ground truth beside prediction.</p>
<table><tr><th>score</th><th>PLCC</th><th>SRCC</th><th>MSE</th></tr>{table}</table>
<table><tr><th>heatmap</th><th>MSE</th><th>MSE (empty truth)</th><th>CC</th>
<th>images with flaws</th></tr>{maps}</table>
{"".join(cells)}"""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "dense_report.html"
    path.write_text(page)
    return path


def summary(result: dict[str, Any]) -> str:
    read = f" ({result['read']})" if result.get("read") else ""
    lines = [f"{result['model']} on {result['data']}{read}: {result['rows']} images"]
    for k, v in result["scores"].items():
        lines.append(f"  {k:13s} PLCC {v['plcc']:.3f}  SRCC {v['srcc']:.3f}  MSE {v['mse']:.4f}")
    for k, v in result["heatmaps"].items():
        lines.append(
            f"  {k:13s} heatmap MSE {v['mse']:.4f} (empty truth {v['mse_empty']:.4f}, "
            f"{v['images_empty']} images)  CC {v['cc']:.3f} ({v['images_with_flaws']} images "
            "with flaws)"
        )
    return "\n".join(lines)


def _cmd_eval_dense(args: argparse.Namespace) -> int:
    from ..reward_model.data import open_dense
    from ..rewards import get_scorer

    for flag, value in (("--n", args.n), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    if args.sample < 0:
        raise InputError(f"--sample must be >= 0, got {args.sample}")
    name = args.model if args.model.startswith(("dense:", "toy:")) else f"dense:{args.model}"
    kwargs = (
        {} if name.startswith("toy:") else {"device": args.device, "batch_size": args.batch_size}
    )
    scorer = get_scorer(name, **kwargs)
    if not hasattr(scorer, "dense"):
        raise InputError(f"{name} has no heatmaps: give a dense head (dense:<path>) or toy:flaws")
    toy = {"n": args.n} if args.data.startswith("toy:") else None
    source = resolve_split(args.data, args.split)
    rows, report = open_dense(
        source.data, source.open_as, toy_options=toy, max_samples=args.max_rows
    )
    if report is not None and report.num_skipped:
        print(f"mmalign: {report}")
    result = evaluate_dense(scorer, rows, batch_size=args.batch_size)
    # split: the split read, null where the data was read whole or built
    result.update(model=args.model, data=args.data, split=source.split, read=source.read)
    print(summary(result))
    out = Path(args.out)
    page = write_report(result, rows, out, args.sample)
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    # an undefined metric (CC of all-empty maps) is null: strict JSON (jq, JavaScript) has no NaN
    (out / "dense_eval.json").write_text(json.dumps(finite_or_null(clean), indent=2) + "\n")
    print(f"report: {page.resolve()}\nresults: {(out / 'dense_eval.json').resolve()}")
    return 0


def register_dense(eval_sub: Any) -> None:
    p = eval_sub.add_parser(
        "dense",
        help="a dense reward head against true scores (PLCC/SRCC) and heatmaps (MSE, CC), "
        "with an HTML report of predicted beside true heatmaps",
    )
    p.add_argument(
        "--model", required=True,
        help="the head's folder or training output_dir (it holds every file the head loads: "
        "weights, config, tokenizer; no --scorer-path), or toy:flaws",
    )  # fmt: skip
    p.add_argument(
        "--data", required=True,
        help="toy:flaws:heldout (held-out prompts, seed 1), toy:flaws, toy:sd-samples (toy-sd's "
        "own images vs toy:flaws' ground truth), a RichHF-18K folder, a saved dense dataset",
    )  # fmt: skip
    p.add_argument(
        "--split",
        default=None,
        help=f"the split of a RichHF folder (train, dev, test) or a saved DatasetDict (default "
        f"{DEFAULT_SPLIT}); a saved dataset without splits is evaluated whole",
    )
    p.add_argument("--n", type=int, default=512, help="toy data: prompts to build")
    p.add_argument("--max-rows", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--sample", type=int, default=16, help="images shown in the report")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/eval-dense", help="report and JSON folder")
    p.set_defaults(func=_cmd_eval_dense)
