"""The Re-Align rDPO data builder (Xing et al., EMNLP 2025; METHODS.md "Re-Align / rDPO").

For each row (a question about one image and the chosen answer y_w):

1. mask the object / attribute / relation words of y_w (`Lexicon`: colours, objects, spatial
   relations, counts, sizes and yes/no existence claims; pluggable);
2. retrieve the top-k images most similar to the shown one from an image pool (`ImageIndex`:
   cosine over L2-normalised embeddings, the shown image itself and exact copies excluded),
   embedded by the VLM's own vision encoder (`VisionEncoderEmbedder`, the paper's choice) or
   by CLIP through open_clip (`OpenClipEmbedder`, optional);
3. fill the masked words with the VLM conditioned on a retrieved image v_l (`SpanFiller`):
   each masked span, left to right, is re-generated greedily by the model shown v_l, given
   the question and y_w's text before the span (earlier spans already filled); the text after
   the span is kept. An answer that is one masked span is the model's own answer about v_l;
4. keep the first fill (in retrieval order) whose sentence-embedding cosine to y_w is below
   the threshold (0.95, the paper's) as y_l (`first_dissimilar`). Rows where no fill passes
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

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from ..data.schema import ValidationReport, to_pil_image
from ..toy.world import COLORS, POSITIONS, SHAPES, SIZES
from .collate import ChatFormat, image_key, row_images
from .load import VLM

THRESHOLD = 0.95  # Re-Align: keep the first fill whose cosine to y_w is < 0.95
TOP_K = 3

# ------------------------------------------------------------------------------ masking

DEFAULT_CLASSES: dict[str, tuple[str, ...]] = {
    "color": (
        *COLORS,
        "grey",
        "black",
        "brown",
        "pink",
        "silver",
        "gold",
        "beige",
        "cyan",
        "magenta",
        "golden",
        "dark",
        "light",
        "bright",
    ),
    "object": (
        *SHAPES,
        "background",
        "rectangle",
        "star",
        "oval",
        "diamond",
        "heart",
        "line",
        "dot",
        "shape",
        "person",
        "man",
        "woman",
        "men",
        "women",
        "people",
        "child",
        "children",
        "boy",
        "girl",
        "dog",
        "cat",
        "car",
        "bus",
        "truck",
        "bicycle",
        "bike",
        "motorcycle",
        "train",
        "boat",
        "plane",
        "airplane",
        "tree",
        "flower",
        "grass",
        "table",
        "chair",
        "bench",
        "bed",
        "couch",
        "sofa",
        "cup",
        "bowl",
        "plate",
        "bottle",
        "glass",
        "book",
        "phone",
        "laptop",
        "computer",
        "tv",
        "bird",
        "horse",
        "sheep",
        "cow",
        "elephant",
        "giraffe",
        "zebra",
        "bear",
        "ball",
        "kite",
        "umbrella",
        "bag",
        "hat",
        "shirt",
        "sign",
        "building",
        "house",
        "window",
        "door",
        "road",
        "street",
        "sky",
        "water",
        "food",
        "pizza",
        "cake",
        "sandwich",
        "banana",
        "apple",
        "orange",
        "clock",
        "toilet",
        "sink",
    ),
    "relation": (
        *(p for p in POSITIONS),
        "centre",
        "middle",
        "above",
        "below",
        "under",
        "beneath",
        "behind",
        "beside",
        "near",
        "between",
        "inside",
        "outside",
        "over",
        "across",
        "around",
        "in front of",
        "next to",
        "on top of",
        "on the left",
        "on the right",
        "at the top",
        "at the bottom",
        "in the center",
        "in the middle",
    ),
    "count": (
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "single",
        "several",
        "many",
        "few",
        "both",
        "pair",
        "dozen",
    ),
    "size": (
        *SIZES,
        "big",
        "tiny",
        "huge",
        "little",
        "tall",
        "short",
        "long",
        "wide",
        "narrow",
        "thick",
        "thin",
    ),
    "existence": ("yes", "no"),  # the whole claim of a presence question's answer
}
_WORD = re.compile(r"[A-Za-z0-9]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    word_class: str


class Lexicon:
    """Word classes whose words (and phrases, and plurals in -s / -es) are masked."""

    def __init__(self, classes: Mapping[str, Iterable[str]] = DEFAULT_CLASSES):
        self.phrases: dict[tuple[str, ...], str] = {}
        for name, words in classes.items():
            for word in words:
                self.phrases[tuple(word.lower().split())] = name
        self.longest = max((len(p) for p in self.phrases), default=1)

    def _lookup(self, words: Sequence[str]) -> str | None:
        key = tuple(words)
        if len(key) == 1 and key[0].isdigit():
            return "count"
        if key in self.phrases:
            return self.phrases[key]
        last = key[-1]
        for stem in (last[:-2] if last.endswith("es") else None, last[:-1]
                     if last.endswith("s") else None):  # fmt: skip
            if stem and (*key[:-1], stem) in self.phrases:
                return self.phrases[(*key[:-1], stem)]
        return None

    def spans(self, text: str) -> list[Span]:
        """Masked spans of `text`, left to right, a phrase preferred over its words."""
        words = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text)]
        out, i = [], 0
        while i < len(words):
            for n in range(min(self.longest, len(words) - i), 0, -1):
                name = self._lookup([w for _, _, w in words[i : i + n]])
                if name is not None:
                    out.append(Span(words[i][0], words[i + n - 1][1], name))
                    i += n
                    break
            else:
                i += 1
        return out

    def mask(self, text: str, token: str = "<mask>") -> str:
        for span in reversed(self.spans(text)):
            text = text[: span.start] + token + text[span.end :]
        return text


# ------------------------------------------------------------------------------ embedders


class Embedder(Protocol):
    """Anything with `embed(items) -> [N, D]` L2-normalised float embeddings."""

    def embed(self, items: Sequence[Any]) -> torch.Tensor: ...


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


class VisionEncoderEmbedder:
    """Mean-pooled `model.model.get_image_features(...)` (vision tower + projector) of the VLM:
    the image as the policy sees it. Works for every family whose image processor returns what
    `get_image_features` takes (LLaVA, LLaVA-NeXT, Qwen2-VL, Idefics3)."""

    def __init__(self, vlm: VLM, batch_size: int = 64):
        self.vlm, self.batch_size = vlm, batch_size

    @torch.no_grad()
    def embed(self, items: Sequence[Any]) -> torch.Tensor:
        core, out = self.vlm.core, []
        device = next(core.parameters()).device
        image_processor = self.vlm.processor.image_processor
        for start in tqdm(range(0, len(items), self.batch_size), desc="embedding images",
                          unit="batch", leave=False):  # fmt: skip
            chunk = [to_pil_image(x).convert("RGB") for x in items[start : start + self.batch_size]]
            inputs = image_processor(images=chunk, return_tensors="pt")
            inputs = {k: v.to(device) for k, v in inputs.items() if torch.is_tensor(v)}
            features = core.model.get_image_features(**inputs, return_dict=True).pooler_output
            out += [f.reshape(-1, f.shape[-1]).float().mean(0) for f in features]
        return _normalise(torch.stack(out).cpu())


class OpenClipEmbedder:
    """CLIP image embeddings through open_clip (`pip install open_clip_torch`, in the `eval`
    extra). `pretrained`: an open_clip tag or a local checkpoint file; None = random weights."""

    def __init__(self, model_name: str = "ViT-B-32", pretrained: str | None = "openai",
                 batch_size: int = 64, device: str = "cpu"):  # fmt: skip
        try:
            import open_clip
        except ImportError:
            raise ImportError(
                "the CLIP image embedder needs open_clip: pip install open_clip_torch "
                "(or mmalign[eval]); the VLM's own vision encoder needs nothing extra"
            ) from None
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device=device
        )
        self.model.eval()
        self.batch_size, self.device = batch_size, device

    @torch.no_grad()
    def embed(self, items: Sequence[Any]) -> torch.Tensor:
        out = []
        for start in tqdm(range(0, len(items), self.batch_size), desc="embedding images (CLIP)",
                          unit="batch", leave=False):  # fmt: skip
            chunk = items[start : start + self.batch_size]
            pixels = torch.stack([self.preprocess(to_pil_image(x).convert("RGB")) for x in chunk])
            out.append(self.model.encode_image(pixels.to(self.device)).float().cpu())
        return _normalise(torch.cat(out))


class TokenEmbeddingEmbedder:
    """Sentence embedding = the mean of the VLM language model's input token embeddings over
    the text's tokens (special tokens left out), after subtracting the mean embedding of the
    vocabulary: the common direction all token embeddings share would otherwise dominate
    every cosine (Mu & Viswanath 2018, "All-but-the-Top")."""

    def __init__(self, vlm: VLM):
        self.vlm = vlm
        weight = vlm.core.get_input_embeddings().weight.detach()
        self.table, self.center = weight, weight.float().mean(0)

    @torch.no_grad()
    def embed(self, items: Sequence[str]) -> torch.Tensor:
        out = []
        for text in items:
            ids = self.vlm.tokenizer(text, add_special_tokens=False)["input_ids"]
            if not ids:
                out.append(torch.zeros_like(self.center).cpu())
                continue
            vectors = self.table[torch.tensor(ids, device=self.table.device)].float()
            out.append((vectors - self.center).mean(0).cpu())
        return _normalise(torch.stack(out))


class BagOfWordsEmbedder:
    """Hashed counts of lowercase words (blake2b into `dim` buckets): model-free, exact."""

    def __init__(self, dim: int = 1 << 16):
        self.dim = dim

    def _bucket(self, word: str) -> int:
        return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest()) % self.dim

    def embed(self, items: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(items), self.dim)
        for i, text in enumerate(items):
            for word in _WORD.findall(text.lower()):
                out[i, self._bucket(word)] += 1
        return _normalise(out)


def first_dissimilar(reference: str, candidates: Sequence[str], embedder: Embedder,
                     threshold: float = THRESHOLD) -> int | None:  # fmt: skip
    """Index of the first candidate whose cosine to `reference` is below `threshold`."""
    if not candidates:
        return None
    emb = embedder.embed([reference, *candidates])
    sims = emb[1:] @ emb[0]
    passing = torch.nonzero(sims < threshold).flatten()
    return int(passing[0]) if len(passing) else None


# ------------------------------------------------------------------------------ retrieval


class ImageIndex:
    """An image pool, embedded once; cosine top-k search that never returns the query image
    itself (nor a pixel-identical copy of it)."""

    def __init__(self, embedder: Embedder, images: Sequence[Any]):
        if not images:
            raise ValueError("the image pool is empty")
        self.embedder = embedder
        self.images = list(images)
        self.keys = [image_key(im) for im in self.images]
        self.positions: dict[str, list[int]] = {}  # pixel key -> pool indices (copies too)
        for i, key in enumerate(self.keys):
            self.positions.setdefault(key, []).append(i)
        self.embeddings = embedder.embed(self.images)

    def search(self, queries: Sequence[Any], k: int) -> list[list[int]]:
        """Pool indices of the `k` nearest other images of each query, nearest first."""
        sims = self.embedder.embed(queries) @ self.embeddings.T
        for q, query in enumerate(queries):
            sims[q, self.positions.get(image_key(query), [])] = float("-inf")
        k = min(k, len(self.images))
        values, index = sims.topk(k, dim=-1) if k else (sims[:, :0], sims[:, :0].long())
        return [[int(i) for i, v in zip(row, vals, strict=True) if v > float("-inf")]
                for row, vals in zip(index.tolist(), values.tolist(), strict=True)]  # fmt: skip


# --------------------------------------------------------------------------------- fill-in


class SpanFiller:
    """Re-generate masked spans of answers with the VLM shown another image (greedy,
    batched with left padding, a progress bar per pass)."""

    def __init__(self, vlm: VLM, batch_size: int = 32, max_new_tokens: int = 8):
        self.vlm, self.batch_size, self.max_new_tokens = vlm, batch_size, max_new_tokens
        self.chat = ChatFormat(vlm.processor)

    def _head(self, prompt: str, answer: str, cut: int) -> str:
        """The text the model continues: the chat prompt, then `answer[:cut]` as the start
        of the assistant turn (trailing spaces dropped: a word's token carries its space)."""
        rendered = self.chat.render(prompt, 1, [answer])
        completion = rendered.completions[answer]
        at = completion.find(answer)
        if at < 0:
            raise ValueError(f"the chat template does not keep the answer {answer!r} verbatim")
        return rendered.prompt + (completion[:at] + answer[:cut]).rstrip(" ")

    @torch.no_grad()
    def _generate(self, texts: Sequence[str], images: Sequence[Any], desc: str) -> list[str]:
        model, processor = self.vlm.model, self.vlm.processor
        tok = self.vlm.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        device = next(model.parameters()).device
        out: list[str] = []
        try:
            for start in tqdm(range(0, len(texts), self.batch_size), desc=desc, unit="batch",
                              leave=False):  # fmt: skip
                chunk = list(texts[start : start + self.batch_size])
                pil = [to_pil_image(im).convert("RGB") for im in images[start : start + len(chunk)]]
                inputs = processor(text=chunk, images=pil, padding=True, return_tensors="pt")
                inputs = inputs.to(device)
                ids = model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                     do_sample=False)  # fmt: skip
                new = ids[:, inputs["input_ids"].shape[1] :]
                out += processor.batch_decode(new, skip_special_tokens=True)
        finally:
            tok.padding_side = side
        return out

    def fill(self, prompts: Sequence[str], images: Sequence[Any], answers: Sequence[str],
             spans: Sequence[Sequence[Span]]) -> list[str]:  # fmt: skip
        """Each answer with its spans re-generated under the matching image."""
        current, shift = list(answers), [0] * len(answers)
        for j in range(max((len(s) for s in spans), default=0)):
            rows = [i for i, s in enumerate(spans) if len(s) > j]
            texts = [self._head(prompts[i], current[i], spans[i][j].start + shift[i])
                     for i in rows]  # fmt: skip
            generated = self._generate(texts, [images[i] for i in rows],
                                       desc=f"filling span {j + 1}")  # fmt: skip
            for i, text in zip(rows, generated, strict=True):
                span = spans[i][j]
                start, end = span.start + shift[i], span.end + shift[i]
                original = current[i][start:end]
                words = text.split()[: len(original.split())]
                if not words:  # nothing generated: the span stays, the filter will drop it
                    continue
                if original[-1].isalnum():  # "blue." -> "blue" where the span had no stop
                    words[-1] = words[-1].rstrip(".,;:!?") or words[-1]
                new = " ".join(words)
                current[i] = current[i][:start] + new + current[i][end:]
                shift[i] += len(new) - len(original)
        return current


# --------------------------------------------------------------------------------- builder


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
        emb = text_embedder.embed([*fills, *(t["chosen"] for t in active)])
        sims = (emb[: len(active)] * emb[len(active) :]).sum(-1).tolist()
        for t, fill, sim in zip(active, fills, sims, strict=True):
            if sim < threshold:
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
