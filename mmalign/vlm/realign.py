"""The Re-Align rDPO data builder (Xing et al., EMNLP 2025; METHODS.md "Re-Align / rDPO").

For each row (a question about one image and the chosen answer y_w):

1. mask the object / attribute / relation words of y_w (`Lexicon` in `realign_lexicon`:
   colours, objects, spatial relations, counts, sizes and yes/no existence claims; pluggable);
2. retrieve the top-k images most similar to the shown one from an image pool (`ImageIndex`
   in `realign_embed`: cosine over L2-normalised embeddings, the shown image itself and exact
   copies excluded), embedded by the VLM's own vision encoder (`VisionEncoderEmbedder`, the
   paper's choice) or by CLIP through open_clip (`OpenClipEmbedder`, optional);
3. fill the masked words with the VLM conditioned on a retrieved image v_l (`SpanFiller` in
   `realign_fill`): each masked span, left to right, is re-generated greedily by the model
   shown v_l, given the question and y_w's text before the span (earlier spans already
   filled); the text after the span is kept. An answer that is one masked span is the
   model's own answer about v_l;
4. keep the first fill (in retrieval order) whose sentence-embedding cosine to y_w is below
   the threshold (0.95, the paper's) as y_l (`dissimilar`). Rows where no fill passes
   are skipped and counted.

Output rows: `prompt`, `image` (the shown one), `chosen` = y_w, `rejected` = y_l,
`retrieved_image` = the v_l that produced y_l, `label` 1, `source` `re-align:<model>`.

The sentence embedder is pluggable (anything with `embed(texts) -> [N, D]` normalised). The
default is `BagOfWordsEmbedder` (hashed word counts): model-free, exactly reproducible, and
its cosine reads plainly (one word changed in a 20-word answer gives 0.95, so the filter
asks for more than a one-word edit of a long answer, and any change of a one-word answer
passes). `TokenEmbeddingEmbedder` (the VLM's own input embeddings, mean-centred and
mean-pooled) is the model-based alternative; it is not the default because the input
embeddings of small models share one dominant direction: on toy-vlm, uncentred, "red" and
"blue" have cosine 0.997 and every fill would fail a 0.95 filter; centred, two sentences
differing in their colour word still have cosine 0.989.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..config import InputError
from ..data.schema import ValidationReport, to_pil_image
from ..files import replace_earlier_build
from .collate import image_key, row_images
from .load import VLM
from .realign_embed import (
    THRESHOLD,
    BagOfWordsEmbedder,
    Embedder,
    ImageIndex,
    VisionEncoderEmbedder,
    dissimilar,
)
from .realign_fill import SpanFiller
from .realign_lexicon import Lexicon

TOP_K = 3


@dataclass
class RealignResult:
    rows: list[dict[str, Any]]
    report: ValidationReport
    similarities: list[float] = field(default_factory=list)  # cosine(y_l, y_w) of kept rows
    ranks: list[int] = field(default_factory=list)  # retrieval rank of the v_l kept


def build_realign(
    vlm: VLM,
    rows: Sequence[Mapping[str, Any]],
    pool: Sequence[Any] | None = None,
    *,
    image_embedder: Embedder | None = None,
    text_embedder: Embedder | None = None,
    lexicon: Lexicon | None = None,
    k: int = TOP_K,
    threshold: float = THRESHOLD,
    chosen: str = "data",
    batch_size: int = 32,
    max_new_tokens: int = 8,
    answer_max_new_tokens: int = 128,
) -> RealignResult:
    """Re-Align rows from `rows` (prompt, one image, chosen) and an image `pool` (default: the
    rows' own images). `chosen="model"` makes y_w the VLM's own greedy answer (the paper's
    setting, up to `answer_max_new_tokens`); `"data"` keeps the row's `chosen`.
    `max_new_tokens` bounds each masked span's re-generation. Every row is kept or counted
    as skipped."""
    if chosen not in ("data", "model"):
        raise ValueError(f"chosen must be 'data' or 'model', got {chosen!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    lexicon = lexicon or Lexicon()
    image_embedder = image_embedder or VisionEncoderEmbedder(vlm, batch_size)
    text_embedder = text_embedder or BagOfWordsEmbedder()
    report = ValidationReport(name="re-align builder")
    todo: list[dict[str, Any]] = []
    for index, row in enumerate(tqdm(rows, desc="reading rows", unit="row", leave=False)):
        images = row_images(row)
        if len(images) != 1:
            report.skip(index, "needs_one_image")
        elif not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            report.skip(index, "missing_prompt")
        elif chosen == "data" and not (isinstance(row.get("chosen"), str) and row["chosen"]):
            report.skip(index, "missing_chosen")
        else:
            todo.append({"index": index, "prompt": row["prompt"], "image": images[0],
                         "chosen": row.get("chosen"), "source": row.get("source")})  # fmt: skip
    if chosen == "model" and todo:
        from .blind import generate_answers
        from .collate import user_content

        conversations = [[{"role": "user", "content": user_content(t["prompt"], 1)}]
                         for t in todo]  # fmt: skip
        answers = generate_answers(vlm.model, vlm.processor, conversations,
                                   [[t["image"]] for t in todo], batch_size=batch_size,
                                   max_new_tokens=answer_max_new_tokens,
                                   desc="answers (y_w)")  # fmt: skip
        for t, a in zip(todo, answers, strict=True):
            t["chosen"] = a
    ready = []
    for t in todo:
        t["spans"] = lexicon.spans(t["chosen"] or "")
        if not t["chosen"]:
            report.skip(t["index"], "empty_model_answer")
        elif not t["spans"]:
            report.skip(t["index"], "nothing_to_mask")
        else:
            ready.append(t)
    if pool is None:
        pool = list({image_key(t["image"]): t["image"] for t in todo}.values())
    result = RealignResult([], report)
    if not ready:
        return result
    index = ImageIndex(image_embedder, pool)
    for t, found in zip(ready, index.search([t["image"] for t in ready], k), strict=True):
        t["candidates"] = found
    filler = SpanFiller(vlm, batch_size, max_new_tokens)
    kept: dict[int, tuple[str, int, float, int]] = {}
    for rank in range(k):
        active = [t for t in ready if t["index"] not in kept and len(t["candidates"]) > rank]
        if not active:
            break
        fills = filler.fill(
            [t["prompt"] for t in active],
            [pool[t["candidates"][rank]] for t in active],
            [t["chosen"] for t in active],
            [t["spans"] for t in active],
        )
        checks = dissimilar(fills, [t["chosen"] for t in active], text_embedder, threshold)
        for t, fill, (passes, sim) in zip(active, fills, checks, strict=True):
            if passes:
                kept[t["index"]] = (fill, t["candidates"][rank], sim, rank)
    for t in ready:
        if t["index"] not in kept:
            report.skip(t["index"], "no_retrieved_image" if not t["candidates"]
                        else "no_fill_passed_filter")  # fmt: skip
            continue
        fill, image_id, sim, rank = kept[t["index"]]
        report.keep()
        result.similarities.append(sim)
        result.ranks.append(rank)
        result.rows.append({
            "prompt": t["prompt"], "image": t["image"], "chosen": t["chosen"],
            "rejected": fill, "retrieved_image": pool[image_id], "label": 1.0,
            "source": f"re-align:{vlm.source}",
        })  # fmt: skip
    return result


def realign_dataset(result: RealignResult) -> Any:
    """The builder's rows as a PreferencePair `Dataset` (images encoded once, as PNG)."""
    from ..data.vlm_rows import load_image, to_dataset

    rows = [{**r, "images": [load_image(to_pil_image(r["image"]), None)],
             "retrieved_image": load_image(to_pil_image(r["retrieved_image"]), None)}
            for r in result.rows]  # fmt: skip
    for r in rows:
        del r["image"]
    return to_dataset(rows, result.report, "re-align builder")


# what `mmalign data realign --out DIR` writes: a saved dataset and its summary
SUMMARY = "realign_summary.json"
_BUILD = (SUMMARY, "state.json", "dataset_info.json")


def earlier_realign(out: str | Path) -> list[str]:
    """The entries of an earlier `data realign` build in `out` (its summary, the saved
    dataset's files and shards), sorted; [] where there is none."""
    folder = Path(out).expanduser()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir()
                  if p.name in _BUILD or (p.suffix == ".arrow" and p.is_file()))  # fmt: skip


def check_realign_out(out: str, overwrite: bool) -> list[str]:
    """`--out` of `data realign`, before the model loads: refused where it is a file, or holds
    an earlier build unless `overwrite` (a rerun wrote its rows over the earlier ones without
    a word: 39 rows became 24), as `mmalign toy data` refuses. With `overwrite`, what the
    earlier build holds, for `replace_realign` to delete once the new rows are built."""
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    earlier = earlier_realign(folder)
    if earlier and not overwrite:
        raise InputError(
            f"--out {out} already holds an earlier build ({', '.join(earlier)}); give "
            "--overwrite to replace it, or another --out"
        )
    return earlier


def replace_realign(out: str, earlier: Sequence[str]) -> None:
    """Delete the earlier build's entries `earlier` of `out` (`check_realign_out`), said on
    stderr with what else is there and stays, as `mmalign toy data --overwrite` says it."""
    replace_earlier_build(Path(out).expanduser(), earlier)
