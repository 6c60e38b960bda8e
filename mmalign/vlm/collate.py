"""Turn VLM preference rows into one batch of token sequences for a single forward pass.

A row is a PreferencePair with text `chosen`/`rejected`, the instruction in `prompt` and its
image(s) in `image` or `images`; rDPO rows add `retrieved_image`, BPO rows add `blind`.
`<image>` in the prompt marks where each image goes (LLaVA conversation format); without
one, the images come before the text. The chat template of the model's processor renders
the conversation (`chat_format.ChatFormat`); the completion's tokens are exactly what the
template appends for the assistant turn (its end-of-turn token included; the tokenizer's EOS
where the template appends none, `ChatFormat.closed`), and only they are scored.

Each distinct (prompt, images) of a row is tokenized once, and every pair that shares a
sequence shares it: rDPO scores three sequences per row (not four) and BPO three: the
chosen answer under the shown image serves `main`, `visual` and `blind`.

Image tokens are never truncated (METHODS.md section 3): a row longer than `max_length`
is skipped and counted by `fits`, or raises in strict mode, naming the row. A row the
collator cannot use (a column its pairs need is empty, an rDPO row without exactly one image,
`<image>` placeholders that do not match its images, a prompt already in the chat template's
format) raises a `RowError` naming the row and its reason; `skip_reason` tells it, without
tokenizing, when the data is opened.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .chat_format import (
    IMAGE_PLACEHOLDER,
    ChatFormat,
    RowError,
    Templated,
    special_tokens_kwargs,
    user_content,
)

__all__ = [
    "IMAGE_PLACEHOLDER", "PAIR_FIELDS", "ChatFormat", "PairCollator", "RowError",
    "SequenceBatch", "Templated", "image_key", "processor_settings", "row_images",
    "special_tokens_kwargs", "user_content",
]  # fmt: skip

# the processor's outputs carried per token beside the ids: which tokens are image tokens
# (Qwen2-VL's M-RoPE, Gemma 3's bidirectional attention over an image's tokens)
TYPE_IDS = ("mm_token_type_ids", "token_type_ids")
PAIR_FIELDS = {"main": (), "visual": ("retrieved_image",), "blind": ("blind",)}


def row_images(row: Mapping[str, Any]) -> list[Any]:
    """The images a row shows with its prompt: `images` (a list) or `image`."""
    images = row.get("images")
    if images:
        return list(images)
    return [row["image"]] if row.get("image") is not None else []


def processor_settings(processor: Any) -> str:
    """Digest of the processor's own settings (its processor_config.json: the image and video
    processors, LLaVA's patch size, Idefics3's image_seq_len; not the tokenizer or the chat
    template). They set the pixels and the number of image tokens of every sequence (Qwen2-VL's
    min / max pixels), so caches of scores key on them beside the weights."""
    from ..data.cache import digest

    to_dict = getattr(processor, "to_dict", None)
    return digest(to_dict() if callable(to_dict) and hasattr(processor, "tokenizer") else None)


def image_key(image: Any) -> str:
    """Identity of an image's pixels (so a repeated image is encoded once)."""
    from ..data.schema import to_pil_image

    pil = to_pil_image(image)
    h = hashlib.blake2b(pil.tobytes(), digest_size=12)
    h.update(f"{pil.size}{pil.mode}".encode())
    return h.hexdigest()


@dataclass
class SequenceBatch:
    """Sequences [S, L] (right-padded), the completion mask, the pairs as sequence indices and
    the pixels of every distinct image (or of every prompt, for layouts not split per image)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor  # True where a token is scored
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (chosen, rejected) indices
    label: torch.Tensor | None  # [B] soft labels, or None
    vision: dict[str, torch.Tensor]  # inputs of get_image_features for the vision units
    units: list[list[int]]  # per sequence: the vision units it shows, in order
    layout: str  # "image" (a unit is an image) or "prompt" (a unit is a prompt's images)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # mm_token_type_ids, ...
    rows: list[int] = field(default_factory=list)  # dataset row of each pair
    sequence_keys: list[tuple[int, str, str]] = field(default_factory=list)
    pad_id: int = 0  # the token in padded positions

    def to(self, device: torch.device | str) -> SequenceBatch:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device)

        return SequenceBatch(
            move(self.input_ids), move(self.attention_mask), move(self.completion_mask),
            {k: (move(c), move(r)) for k, (c, r) in self.pairs.items()},
            None if self.label is None else move(self.label),
            {k: move(v) for k, v in self.vision.items()}, self.units, self.layout,
            {k: move(v) for k, v in self.extra.items()}, self.rows, self.sequence_keys,
            self.pad_id,
        )  # fmt: skip


def _split_pixels(inputs: Mapping[str, torch.Tensor], n_images: int, n_texts: int):
    """Per-image slices of the processor's pixel inputs, or None when the layout is per
    prompt (Idefics3's [texts, images, ...])."""
    pixel = inputs["pixel_values"]
    if "image_grid_thw" in inputs:  # Qwen2-VL: patches of all images concatenated
        grid = inputs["image_grid_thw"]
        counts = grid.prod(-1).tolist()
        chunks = torch.split(pixel, counts)
        return [{"pixel_values": c, "image_grid_thw": grid[i : i + 1]} for i, c in
                enumerate(chunks)]  # fmt: skip
    if pixel.shape[0] == n_images and "pixel_attention_mask" not in inputs:
        shown_with = None
        if "batch_num_images" in inputs:  # LLaVA-OneVision: per prompt, how many images
            counts = torch.as_tensor(inputs["batch_num_images"])
            shown_with = counts.repeat_interleave(counts)  # per image, its prompt's count
        out = []
        for i in range(n_images):
            unit = {"pixel_values": pixel[i : i + 1]}
            if "image_sizes" in inputs:
                unit["image_sizes"] = inputs["image_sizes"][i : i + 1]
            if shown_with is not None:
                # an image among others is its base tile only, one shown alone is tiled
                # (anyres): `scorer.image_features` encodes each as its processor laid it out
                unit["batch_num_images"] = shown_with[i : i + 1]
            out.append(unit)
        return out
    return None


def _unit_key(image: Any, unit: Mapping[str, torch.Tensor]) -> str:
    """A vision unit's identity: the image's pixels, and for LLaVA-OneVision whether it is
    shown among others (then not tiled: other pixels, other features than shown alone)."""
    shown_with = unit.get("batch_num_images")
    among = shown_with is not None and int(shown_with) != 1
    return image_key(image) + (":among" if among else "")


def _cat_units(units: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([u[k] for u in units]) for k in units[0]}


class PairCollator:
    """Rows -> `SequenceBatch` holding the sequences of the pairs named in `pairs`.
    `chosen_only`: only the chosen answers are tokenized and scored (an objective that reads
    nothing else, such as `sft`); each pair's rejected index points at its chosen sequence.
    `open_end`: see `ChatFormat`."""

    def __init__(self, processor: Any, pairs: Sequence[str] = ("main",),
                 max_length: int | None = None, *, chosen_only: bool = False,
                 open_end: Callable[[str], bool] | None = None):  # fmt: skip
        unknown = [p for p in pairs if p not in PAIR_FIELDS]
        if unknown:
            raise ValueError(
                f"unknown VLM pair {unknown[0]!r}; VLM scorers produce {', '.join(PAIR_FIELDS)}"
            )
        if chosen_only and tuple(pairs) != ("main",):
            raise ValueError(f"chosen-only rows have only the main pair, not {list(pairs)}")
        self.pairs = tuple(pairs)
        self.chosen_only = chosen_only
        self.format = ChatFormat(processor, open_end)
        self.processor = processor
        self.max_length = max_length
        tok = self.format.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    # --------------------------------------------------------------------------- plan
    def _plan(self, row: Mapping[str, Any]) -> tuple[list[tuple[str, str]], dict]:
        """The (variant, answer) sequences of a row and each pair's (chosen, rejected)."""
        for pair in self.pairs:
            for name in PAIR_FIELDS[pair]:
                if row.get(name) is None:
                    raise RowError(
                        f"missing_{name}",
                        f"pair '{pair}' needs the column '{name}', which is empty",
                    )
        seqs: list[tuple[str, str]] = []

        def seq(variant: str, answer: str) -> int:
            if (variant, answer) not in seqs:
                seqs.append((variant, answer))
            return seqs.index((variant, answer))

        plan = {}
        for pair in self.pairs:
            chosen = seq("shown", row["chosen"])
            if pair == "main" and self.chosen_only:
                plan[pair] = (chosen, chosen)
            elif pair == "main":
                plan[pair] = (chosen, seq("shown", row["rejected"]))
            elif pair == "visual":
                plan[pair] = (chosen, seq("retrieved", row["chosen"]))
            else:
                plan[pair] = (chosen, seq("shown", row["blind"]))
        return seqs, plan

    def _images(self, row: Mapping[str, Any], variant: str) -> list[Any]:
        images = row_images(row)
        if variant == "retrieved":  # Re-Align: the retrieved image replaces the shown one
            if len(images) != 1:
                raise RowError(
                    "visual_needs_one_image",
                    "the visual (rDPO) pair needs rows with "
                    f"exactly one image; this one has {len(images)}",
                )
            return [row["retrieved_image"]]
        return images

    def problem(self, row: Mapping[str, Any]) -> RowError | None:
        """Why `row` cannot be collated for these pairs (a `RowError` with its reason), or
        None; checked without tokenizing, so the rows can be checked when the data is opened
        and never fail mid-run."""
        try:
            seqs, _ = self._plan(row)
            self.format.check_prompt(row["prompt"])  # the template's text, rendered once
            for variant in dict.fromkeys(v for v, _ in seqs):
                user_content(row["prompt"], len(self._images(row, variant)))
        except RowError as err:
            return err
        return None

    def skip_reason(self, row: Mapping[str, Any]) -> str | None:
        """The reason `row` is skipped (and counted) when the data is opened: a `problem`'s,
        `too_long` where it does not fit `max_length`, or None where it is used."""
        bad = self.problem(row)
        if bad is not None:
            return bad.reason
        return None if self.fits(row) else "too_long"

    def lengths(self, row: Mapping[str, Any], index: int | None = None) -> int:
        """The longest sequence of a row, in tokens (image tokens included). Errors name
        the row `index` (none when not given)."""
        try:
            batch = self([row], check_length=False)
        except RowError as err:
            raise err.at(index) from None
        return int(batch.attention_mask.sum(-1).max())

    def fits(self, row: Mapping[str, Any], index: int | None = None) -> bool:
        return self.max_length is None or self.lengths(row, index) <= self.max_length

    def _type_ids(self, inputs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The per-token type ids of `TYPE_IDS` the processor returned. Gemma 3's processor
        names its image-token mask `token_type_ids` (its model attends bidirectionally
        within an image's tokens from it; without it they are causal); a `token_type_ids`
        that the tokenizer itself writes is a text segment id, which VLMs do not read."""
        own = getattr(self.format.tokenizer, "model_input_names", ())
        carried = [k for k in TYPE_IDS if k != "token_type_ids" or k not in own]
        return {k: inputs[k] for k in carried if inputs.get(k) is not None}

    # ------------------------------------------------------------------------ collate
    def __call__(self, rows: Sequence[Mapping[str, Any]], *, check_length: bool = True,
                 row_ids: Sequence[int] | None = None,
                 names: Sequence[int] | None = None) -> SequenceBatch:  # fmt: skip
        """One batch of `rows`. `row_ids`: the dataset's id of each row (`SequenceBatch.rows`,
        the key of its precomputed reference scores; default their positions); `names`: the
        row each error names (default `row_ids`), the row of the data as read where the
        caller knows it (`ValidationReport.source_row`), as the checks that opened it named
        it."""
        from ..data.schema import to_pil_image, to_rgb

        named = names if names is not None else row_ids

        prompts: list[tuple[int, str]] = []  # (row, variant): one processor text each
        prompt_texts, prompt_images, sequences = [], [], []
        pair_idx: dict[str, tuple[list[int], list[int]]] = {p: ([], []) for p in self.pairs}
        for r, row in enumerate(rows):
            rendered, shown = {}, {}
            try:
                seqs, plan = self._plan(row)
                for variant in dict.fromkeys(v for v, _ in seqs):
                    shown[variant] = self._images(row, variant)
                    answers = [a for v, a in seqs if v == variant]
                    rendered[variant] = self.format.render(row["prompt"], len(shown[variant]),
                                                           answers)  # fmt: skip
            except RowError as err:  # named as the caller names the row, where it tells
                raise err.at(r if named is None else named[r]) from None
            for variant, images in shown.items():
                prompts.append((r, variant))
                prompt_texts.append(rendered[variant].prompt)
                prompt_images.append([to_rgb(to_pil_image(im)) for im in images])
            base = len(sequences)
            for variant, answer in seqs:
                p = prompts.index((r, variant))
                sequences.append((p, rendered[variant].completions[answer]))
            for pair, (c, j) in plan.items():
                pair_idx[pair][0].append(base + c)
                pair_idx[pair][1].append(base + j)
        flat_images = [im for ims in prompt_images for im in ims]
        kwargs: dict[str, Any] = {
            "text": prompt_texts,
            "return_tensors": "pt",
            "padding": True,
            **special_tokens_kwargs(self.processor, prompt_texts),
        }
        if flat_images:
            kwargs["images"] = prompt_images if any(len(x) > 1 for x in prompt_images) \
                else flat_images  # fmt: skip
        inputs = self.processor(**kwargs)
        # Vision units: distinct images (or prompts, for per-prompt layouts).
        units_of_prompt: list[list[int]] = []
        vision: dict[str, torch.Tensor] = {}
        layout = "image"
        if flat_images:
            per_image = _split_pixels(inputs, len(flat_images), len(prompt_texts))
            if per_image is None:
                layout = "prompt"
                units_of_prompt = [[i] for i in range(len(prompt_texts))]
                vision = {k: v for k, v in inputs.items() if k.startswith("pixel")}
            else:
                keys = [_unit_key(im, u) for im, u in zip(flat_images, per_image, strict=True)]
                first: dict[str, int] = {}
                for k in keys:
                    first.setdefault(k, len(first))
                order = list(dict.fromkeys(keys))
                vision = _cat_units([per_image[keys.index(k)] for k in order])
                pos = 0
                for ims in prompt_images:
                    units_of_prompt.append([first[keys[pos + j]] for j in range(len(ims))])
                    pos += len(ims)
        else:
            units_of_prompt = [[] for _ in prompt_texts]
        # Sequences: the prompt's tokens (padding removed) + the completion's tokens.
        ids_rows, masks = [], []
        types = self._type_ids(inputs)
        extra_rows: dict[str, list[list[int]]] = {k: [] for k in types}
        for p, completion in sequences:
            keep = inputs["attention_mask"][p].bool()
            prompt_ids = inputs["input_ids"][p][keep].tolist()
            comp = self.format.completion_ids(completion)
            ids_rows.append(prompt_ids + comp)
            masks.append([False] * len(prompt_ids) + [True] * len(comp))
            for k, values in types.items():  # the completion holds text tokens only: type 0
                extra_rows[k].append(values[p][keep].tolist() + [0] * len(comp))
        longest = max(len(x) for x in ids_rows)
        if check_length and self.max_length is not None and longest > self.max_length:
            which = next(i for i, x in enumerate(ids_rows) if len(x) > self.max_length)
            row = prompts[sequences[which][0]][0]
            name = row if named is None else named[row]
            raise ValueError(
                f"row {name}: {len(ids_rows[which])} tokens exceed max_length "
                f"{self.max_length}; image tokens are never truncated (skip such rows when "
                "the data is opened, or raise max_length)"
            )
        n = len(ids_rows)
        input_ids = torch.full((n, longest), self.pad_id, dtype=torch.long)
        attention = torch.zeros(n, longest, dtype=torch.long)
        completion = torch.zeros(n, longest, dtype=torch.bool)
        # padding is type 0, as the processor pads them
        extra = {k: torch.zeros(n, longest, dtype=v.dtype) for k, v in types.items()}
        for i, ids in enumerate(ids_rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            completion[i, : len(ids)] = torch.tensor(masks[i])
            for k in extra:
                extra[k][i, : len(ids)] = torch.tensor(extra_rows[k][i])
        labels = [row.get("label") for row in rows]
        label = None
        if any(x is not None and float(x) != 1.0 for x in labels):
            label = torch.tensor([1.0 if x is None else float(x) for x in labels])
        return SequenceBatch(
            input_ids=input_ids,
            attention_mask=attention,
            completion_mask=completion,
            pairs={k: (torch.tensor(c), torch.tensor(r)) for k, (c, r) in pair_idx.items()},
            label=label,
            vision=vision,
            units=[units_of_prompt[p] for p, _ in sequences],
            layout=layout,
            extra=extra,
            rows=list(row_ids) if row_ids is not None else list(range(len(rows))),
            sequence_keys=[(prompts[p][0], prompts[p][1], c) for p, c in sequences],
            pad_id=self.pad_id,
        )
