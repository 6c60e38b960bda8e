"""Turn VLM preference rows into one batch of token sequences for a single forward pass.

A row is a PreferencePair with text `chosen`/`rejected`, the instruction in `prompt` and its
image(s) in `image` or `images`; rDPO rows add `retrieved_image`, BPO rows add `blind`.
`<image>` in the prompt marks where each image goes (LLaVA conversation format); without
one, the images come before the text. The chat template of the model's processor renders
the conversation; the completion's tokens are exactly what the template appends for the
assistant turn (its end-of-turn token included; the tokenizer's EOS where the template
appends none, `ChatFormat.closed`), and only they are scored.

Each distinct (prompt, images) of a row is tokenized once, and every pair that shares a
sequence shares it: rDPO scores three sequences per row (not four) and BPO three: the
chosen answer under the shown image serves `main`, `visual` and `blind`.

Image tokens are never truncated (METHODS.md section 3): a row longer than `max_length`
is skipped and counted by `fits`, or raises in strict mode, naming the row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

IMAGE_PLACEHOLDER = "<image>"
PAIR_FIELDS = {"main": (), "visual": ("retrieved_image",), "blind": ("blind",)}


def row_images(row: Mapping[str, Any]) -> list[Any]:
    """The images a row shows with its prompt: `images` (a list) or `image`."""
    images = row.get("images")
    if images:
        return list(images)
    return [row["image"]] if row.get("image") is not None else []


def user_content(prompt: str, n_images: int) -> list[dict[str, str]]:
    """Chat content parts: the prompt split at `<image>` placeholders, images interleaved."""
    parts = prompt.split(IMAGE_PLACEHOLDER)
    if len(parts) == 1:
        return [{"type": "image"}] * n_images + [{"type": "text", "text": prompt}]
    if len(parts) - 1 != n_images:
        raise ValueError(
            f"the prompt has {len(parts) - 1} {IMAGE_PLACEHOLDER} placeholders but the row has "
            f"{n_images} images"
        )
    content: list[dict[str, str]] = []
    for i, text in enumerate(parts):
        if i:
            content.append({"type": "image"})
        if text.strip():
            content.append({"type": "text", "text": text.strip()})
    return content


def special_tokens_kwargs(processor: Any, texts: Sequence[str]) -> dict[str, Any]:
    """Processor kwargs for chat-template texts: `add_special_tokens=False` when the template
    already wrote the tokenizer's BOS (Idefics3's starts with `<|begin_of_text|>`), so the
    sequence holds one BOS, not two; transformers' `processor.apply_chat_template(tokenize=True)`
    follows the same rule. Texts without the BOS keep the processor's default (LLaVA-1.5's
    template leaves the BOS to the tokenizer)."""
    bos = getattr(getattr(processor, "tokenizer", processor), "bos_token", None)
    if bos and texts and all(t.startswith(bos) for t in texts):
        return {"add_special_tokens": False}
    return {}


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
class Templated:
    """A row's conversation rendered by the chat template: prompt text and completions."""

    prompt: str
    completions: dict[str, str]  # answer -> the text the template appends for it


class ChatFormat:
    """Render prompts and completions with a processor's chat template. `open_end(answer)`:
    the answers whose turn is not over (a step-level prefix), which end without the template's
    end-of-turn text."""

    def __init__(self, processor: Any, open_end: Callable[[str], bool] | None = None):
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.open_end = open_end

    def render(self, prompt: str, n_images: int, answers: Sequence[str]) -> Templated:
        user = [{"role": "user", "content": user_content(prompt, n_images)}]
        head = self.processor.apply_chat_template(user, add_generation_prompt=True)
        completions = {}
        for answer in answers:
            turn = {"role": "assistant", "content": [{"type": "text", "text": answer}]}
            full = self.processor.apply_chat_template([*user, turn])
            if not full.startswith(head):
                raise ValueError(
                    "the chat template renders the assistant turn in a way that changes the "
                    f"prompt before it; cannot separate the completion of {answer!r}"
                )
            completions[answer] = full[len(head) :]
            if self.open_end is not None and self.open_end(answer):
                end = completions[answer].rfind(answer.strip())
                if end < 0:
                    raise ValueError(f"the chat template changed the open-ended answer {answer!r}")
                completions[answer] = completions[answer][: end + len(answer.strip())]
            else:
                completions[answer] = self.closed(completions[answer], answer)
        return Templated(head, completions)

    def closed(self, completion: str, answer: str) -> str:
        """`completion` ending its turn: where the template appends no end-of-turn token after
        the answer (LLaVA-1.5's and LLaVA-NeXT-vicuna's hub templates append a space), the
        tokenizer's EOS replaces that trailing whitespace, as LLaVA's own training format
        ends an assistant turn ("ASSISTANT: answer</s>", its vicuna_v1 conversation). Without
        it the model is never trained to stop, and a stray space token is scored instead.
        A template that ends the turn with any special token (Qwen's <|im_end|>, Idefics3's
        <end_of_utterance>, an EOS) is left as it is."""
        eos = getattr(self.tokenizer, "eos_token", None)
        text = answer.strip()
        end = completion.rfind(text) if text else -1
        if not eos or end < 0:
            return completion
        tail = completion[end + len(text) :]
        specials = [t for t in getattr(self.tokenizer, "all_special_tokens", []) if t]
        if any(t in tail for t in specials):
            return completion
        return completion[: end + len(text)] + tail.rstrip() + eos

    def completion_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


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
        out = []
        for i in range(n_images):
            unit = {"pixel_values": pixel[i : i + 1]}
            if "image_sizes" in inputs:
                unit["image_sizes"] = inputs["image_sizes"][i : i + 1]
            out.append(unit)
        return out
    return None


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
                    raise ValueError(f"pair '{pair}' needs the column '{name}', which is empty")
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
                raise ValueError("the visual (rDPO) pair needs rows with exactly one image")
            return [row["retrieved_image"]]
        return images

    def lengths(self, row: Mapping[str, Any]) -> int:
        """The longest sequence of a row, in tokens (image tokens included)."""
        batch = self([row], check_length=False)
        return int(batch.attention_mask.sum(-1).max())

    def fits(self, row: Mapping[str, Any]) -> bool:
        return self.max_length is None or self.lengths(row) <= self.max_length

    # ------------------------------------------------------------------------ collate
    def __call__(self, rows: Sequence[Mapping[str, Any]], *, check_length: bool = True,
                 row_ids: Sequence[int] | None = None) -> SequenceBatch:  # fmt: skip
        from ..data.schema import to_pil_image, to_rgb

        prompts: list[tuple[int, str]] = []  # (row, variant): one processor text each
        prompt_texts, prompt_images, sequences = [], [], []
        pair_idx: dict[str, tuple[list[int], list[int]]] = {p: ([], []) for p in self.pairs}
        for r, row in enumerate(rows):
            seqs, plan = self._plan(row)
            rendered = {}
            for variant in dict.fromkeys(v for v, _ in seqs):
                images = self._images(row, variant)
                answers = [a for v, a in seqs if v == variant]
                rendered[variant] = self.format.render(row["prompt"], len(images), answers)
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
                keys = [image_key(im) for im in flat_images]
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
        ids_rows, masks, extra_rows = [], [], []
        type_ids = inputs.get("mm_token_type_ids")
        for p, completion in sequences:
            keep = inputs["attention_mask"][p].bool()
            prompt_ids = inputs["input_ids"][p][keep].tolist()
            comp = self.format.completion_ids(completion)
            ids_rows.append(prompt_ids + comp)
            masks.append([False] * len(prompt_ids) + [True] * len(comp))
            if type_ids is not None:
                extra_rows.append(type_ids[p][keep].tolist() + [0] * len(comp))
        longest = max(len(x) for x in ids_rows)
        if check_length and self.max_length is not None and longest > self.max_length:
            which = next(i for i, x in enumerate(ids_rows) if len(x) > self.max_length)
            row = prompts[sequences[which][0]][0]
            name = row if row_ids is None else row_ids[row]
            raise ValueError(
                f"row {name}: {len(ids_rows[which])} tokens exceed max_length "
                f"{self.max_length}; image tokens are never truncated (skip such rows when "
                "the data is opened, or raise max_length)"
            )
        n = len(ids_rows)
        input_ids = torch.full((n, longest), self.pad_id, dtype=torch.long)
        attention = torch.zeros(n, longest, dtype=torch.long)
        completion = torch.zeros(n, longest, dtype=torch.bool)
        extra: dict[str, torch.Tensor] = {}
        if extra_rows:
            extra["mm_token_type_ids"] = torch.zeros(n, longest, dtype=type_ids.dtype)
        for i, ids in enumerate(ids_rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            completion[i, : len(ids)] = torch.tensor(masks[i])
            if extra_rows:
                extra["mm_token_type_ids"][i, : len(ids)] = torch.tensor(extra_rows[i])
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
