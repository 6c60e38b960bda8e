"""PPD's user encoder (Dang et al. CVPR 2025): a VLM reads a user's few-shot preferences and an
intermediate hidden state, pooled over the sequence, is the user embedding.

One conversation per user: for each of N examples (N = 4 by default) the prompt, the preferred
image and the dispreferred image, then a question about what the user likes. The VLM runs once
over it (no generation); `hidden_states[layer]` (default -2, the paper's choice of a late
intermediate layer) is pooled: `mean` over the real tokens, the `last` token, or a contrast of
the two images of each example (`contrast`: the preferred image's tokens' mean minus the
dispreferred's, averaged over the examples; `contrast_tokens`: the same token by token, for
models that give every image the same number of tokens, flattened: T_img * D wide, 2048 on
toy-vlm but 576 * 4096 on LLaVA-1.5, where `contrast` is the one to use). Both need each image's
tokens told apart: one run of image tokens per image (LLaVA, Qwen2-VL), or runs side by side
split by each image's token count from the forward's image features (LLaVA-OneVision, whose
template writes a prompt's images first, nothing between them); others get a clear error. The
symmetric poolings see both images of an example alike, so which one was preferred reaches them
only through what the layers made of the order; the contrasts read it directly (on toy-vlm only
they carry a user's taste: docs/results.md, PPD). Layer, pooling and the rows used are recorded
with the embeddings. Embeddings are cached by the model's weights (`VLM.weights_key`), the
layer, the pooling, the exact examples (prompt text and image bytes) and
`PROMPT_FORMAT_VERSION`, which each cache entry also records: an entry of another version, or of
none (written before the version existed), is computed again, never served. The key needs the
weights' files and the processor, not the model: given a `VLMRef`, the encoder is loaded only to
compute a missing entry, by the one caller that computes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import InputError
from ..data.cache import cache_root, digest
from ..data.schema import to_rgb
from ..files import make_readable
from .collate import processor_settings, special_tokens_kwargs
from .load import VLM, VLMRef

POOLINGS = ("mean", "last", "contrast", "contrast_tokens")
# The version of the encoder's input: how `few_shot_conversation` words a user's examples and how
# `embed_users` tokenizes it. Neither the weights nor the examples change when it does, so the
# cache key names it; bump it with any change to the conversation, the template call or the
# tokenizer kwargs, or cached embeddings of the old input are reused as if the same. 1: the
# format before it was versioned (two BOS where the chat template writes one); 2: one BOS
# (`special_tokens_kwargs`); 3: a user's images given to the processor as one list per
# conversation (LLaVA-OneVision's lays out each of a prompt's several images as its base tile;
# a flat list had every image tiled as if alone, anyres). Caches without a version are read
# as stale.
PROMPT_FORMAT_VERSION = 3
Example = tuple[str, Any, Any]  # (prompt, preferred PIL image, dispreferred PIL image)


def few_shot_conversation(examples: Sequence[Example]) -> tuple[list[dict[str, Any]], list[Any]]:
    """The chat messages and images (in order) for one user's examples."""
    content: list[dict[str, Any]] = []
    images: list[Any] = []
    for k, (prompt, preferred, dispreferred) in enumerate(examples, 1):
        content += [
            {"type": "text", "text": f"example {k}: {prompt}. preferred:"},
            {"type": "image"},
            {"type": "text", "text": "dispreferred:"},
            {"type": "image"},
        ]
        images += [to_rgb(preferred), to_rgb(dispreferred)]
    content.append({"type": "text", "text": "what does this user like?"})
    return [{"role": "user", "content": content}], images


def _image_digest(image: Any) -> str:
    """The image's pixels and its size: the same bytes in another shape are another image."""
    rgb = to_rgb(image)
    return hashlib.sha256(f"{rgb.size}:".encode() + rgb.tobytes()).hexdigest()[:16]


def _check_settings(shots: int, pooling: str) -> None:
    if shots < 1:
        raise InputError(f"--shots must be at least 1, got {shots}")
    if pooling not in POOLINGS:
        raise InputError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")


def _check(examples: Mapping[str, Sequence[Example]], shots: int, layer: int, pooling: str) -> None:
    _check_settings(shots, pooling)
    short = {u: len(e) for u, e in examples.items() if len(e) < shots}
    if short:
        listed = ", ".join(f"{u} ({n})" for u, n in sorted(short.items())[:8])
        listed += f" and {len(short) - 8} more" if len(short) > 8 else ""
        raise InputError(
            f"{len(short)} user(s) have fewer than --shots {shots} examples: {listed}; "
            "lower --shots or add pairs for them"
        )


def image_token_id(model: Any, processor: Any) -> int:
    """The id of the placeholder token that a VLM's processor expands into image tokens."""
    for holder in (model.config, processor):
        for name in ("image_token_id", "image_token_index"):
            value = getattr(holder, name, None)
            if isinstance(value, int):
                return value
    raise InputError(
        f"{type(model).__name__}: no image token id in its config or processor; "
        "the contrast poolings need it (use pooling mean or last)"
    )


def image_blocks(input_ids: torch.Tensor, token_id: int,
                 sizes: Sequence[int] | None = None) -> list[torch.Tensor]:  # fmt: skip
    """Positions of each image's tokens in one sequence: runs of consecutive `token_id`s; with
    `sizes` (each image's token count, in order) that add up to its image tokens, those counts
    in order, for templates that set a prompt's images side by side (LLaVA-OneVision's writes
    them all first, nothing between them: one run for all)."""
    pos = (input_ids == token_id).nonzero().flatten()
    if pos.numel() == 0:
        return []
    if sizes is not None and sum(sizes) == pos.numel():
        return list(torch.split(pos, list(sizes)))
    breaks = (pos[1:] - pos[:-1] > 1).nonzero().flatten() + 1
    return list(torch.tensor_split(pos, breaks.tolist()))


def image_token_counts(output: Any, n_images: int) -> list[int] | None:
    """Each image's token count in a forward's order, from the image features it placed
    (`image_outputs.pooler_output`, one [tokens, D] per image); None where the output has no
    such features, or not one per image (Idefics3's are per tile)."""
    image = getattr(output, "image_outputs", None)
    features = getattr(image, "pooler_output", None)
    if features is None or len(features) != n_images:
        return None
    return [int(f.shape[0]) for f in features]


def contrast_pool(
    h: torch.Tensor, blocks: Sequence[torch.Tensor], pooling: str, shots: int
) -> torch.Tensor:
    """One user's contrast embedding from one sequence's states `h` [T, D] and its image
    blocks, in order preferred, dispreferred, preferred, ...: `contrast` [D], the mean over
    examples of (mean preferred-image state - mean dispreferred-image state);
    `contrast_tokens` [T_img * D], the same per image token. The blocks must be exactly one
    run of image tokens per image (`image_blocks`: LLaVA, Qwen2-VL; LLaVA-OneVision's, side by
    side, split by each image's token count)."""
    if len(blocks) != 2 * shots:
        raise InputError(
            f"pooling {pooling}: found {len(blocks)} runs of image tokens in a prompt of "
            f"{2 * shots} images; this model's image tokens are not one run per image (or its "
            "processor does not expand them): use pooling mean or last"
        )
    if pooling == "contrast":
        means = torch.stack([h[b].mean(0) for b in blocks])
        return (means[0::2] - means[1::2]).mean(0)
    sizes = {len(b) for b in blocks}
    if len(sizes) != 1:
        raise InputError(
            f"pooling contrast_tokens needs the same number of tokens per image, found sizes "
            f"{sorted(sizes)}; use pooling contrast"
        )
    states = torch.stack([h[b] for b in blocks])  # [2 * shots, T_img, D]
    return (states[0::2] - states[1::2]).mean(0).flatten()


@torch.no_grad()
def embed_users(
    vlm: VLM,
    examples: Mapping[str, Sequence[Example]],
    *,
    shots: int = 4,
    layer: int = -2,
    pooling: str = "mean",
    batch_size: int = 8,
) -> dict[str, torch.Tensor]:
    """One embedding per user from their first `shots` examples, batched over users: [D], or
    [T_img * D] for `contrast_tokens`."""
    _check(examples, shots, layer, pooling)
    model, processor = vlm.model, vlm.processor
    tok = vlm.tokenizer
    side, tok.padding_side = tok.padding_side, "right"
    users = list(examples)
    out: dict[str, torch.Tensor] = {}
    device = next(model.parameters()).device
    width = 0  # a contrast embedding's width, the same for every user
    try:
        for start in tqdm(range(0, len(users), batch_size), desc="user embeddings", unit="batch"):
            chunk = users[start : start + batch_size]
            texts, images = [], []
            for u in chunk:
                messages, ims = few_shot_conversation(list(examples[u])[:shots])
                texts.append(processor.apply_chat_template(messages, add_generation_prompt=True))
                images.append(ims)  # one list per conversation: its images, in order
            inputs = processor(text=texts, images=images, padding=True, return_tensors="pt",
                               **special_tokens_kwargs(processor, texts))  # fmt: skip
            inputs = inputs.to(device)
            output = model(**inputs, output_hidden_states=True)
            hidden = output.hidden_states
            if not -len(hidden) <= layer < len(hidden):
                raise InputError(f"layer {layer} out of range: the model has {len(hidden)} states")
            h = hidden[layer].float()
            mask = inputs["attention_mask"].to(h)
            if pooling.startswith("contrast"):
                if h.shape[1] != inputs["input_ids"].shape[1]:
                    raise InputError(
                        f"pooling {pooling}: the model's states ({h.shape[1]} positions) do not "
                        f"line up with its input ids ({inputs['input_ids'].shape[1]}); use mean"
                    )
                token = image_token_id(model, processor)
                n = 2 * shots  # images per user, in the order of `images`
                sizes = image_token_counts(output, n * h.shape[0])
                rows = [
                    contrast_pool(h[i], image_blocks(inputs["input_ids"][i], token,
                                                     sizes and sizes[i * n : (i + 1) * n]),
                                  pooling, shots)
                    for i in range(h.shape[0])
                ]  # fmt: skip
                widths = {int(r.numel()) for r in rows} | ({width} if width else set())
                if len(widths) != 1:
                    raise InputError(
                        f"pooling {pooling}: users' embeddings have different widths "
                        f"{sorted(widths)} (images of different token counts); use contrast"
                    )
                width = int(rows[0].numel())
                pooled = torch.stack(rows)
            elif pooling == "mean":
                pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            else:
                last = mask.sum(1).long() - 1
                pooled = h[torch.arange(h.shape[0], device=h.device), last]
            out.update({u: pooled[i].cpu() for i, u in enumerate(chunk)})
    finally:
        tok.padding_side = side
    return out


def cache_key(
    vlm: VLM | VLMRef,
    examples: Mapping[str, Sequence[Example]],
    shots: int,
    layer: int,
    pooling: str,
) -> str:
    """Digest of the weights, the settings, the prompt format's version, the processor's image
    settings and exactly the examples used (images by bytes). A `VLMRef` gives the same key as
    the `VLM` it loads, without loading the model."""
    used = {
        u: [(p, _image_digest(a), _image_digest(b)) for p, a, b in list(e)[:shots]]
        for u, e in examples.items()
    }
    return digest({"weights": vlm.weights_key, "shots": shots, "layer": layer,
                   "pooling": pooling, "examples": used, "prompt_format": PROMPT_FORMAT_VERSION,
                   "processor": processor_settings(vlm.processor)})  # fmt: skip


def _read_cache(path: Path) -> dict[str, torch.Tensor] | None:
    """A cache entry's embeddings, or None where it does not record this prompt format (an
    entry written before the version existed, or one left by a version with the same key)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        if (f.metadata() or {}).get("prompt_format") != str(PROMPT_FORMAT_VERSION):
            return None
        return {u: f.get_tensor(u) for u in f.keys()}


def cached_user_embeddings(
    vlm: VLM | VLMRef,
    examples: Mapping[str, Sequence[Example]],
    *,
    shots: int = 4,
    layer: int = -2,
    pooling: str = "mean",
    batch_size: int = 8,
    cache_dir: str | Path | None = None,
) -> tuple[dict[str, torch.Tensor], bool]:
    """`embed_users`, computed once: returns (embeddings, True if read from the cache).

    A hit is read without a lock (a read-only cache serves its entries). A miss takes the
    entry's own lock, `<key>.lock` beside it, and reads again (another writer, a training run's
    process or `mmalign data user-embed`, may have finished meanwhile) before computing: of
    the callers at once, one computes and the others read its entry. Given a `VLMRef`, only
    that one loads the encoder (`VLMRef.load`): a hit, and the processes of a launch that read
    the entry another computed, never hold it. The examples are checked (`_check`) where they
    are embedded: an entry exists only for examples that passed."""
    from filelock import FileLock

    _check_settings(shots, pooling)
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "user_embed"
    path = root / f"{cache_key(vlm, examples, shots, layer, pooling)}.safetensors"
    cached = _read_cache(path) if path.is_file() else None
    if cached is not None:
        return cached, True
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_suffix(".lock"))):
        cached = _read_cache(path) if path.is_file() else None
        if cached is not None:
            return cached, True
        model = vlm.load() if isinstance(vlm, VLMRef) else vlm
        embs = embed_users(
            model, examples, shots=shots, layer=layer, pooling=pooling, batch_size=batch_size
        )
        _write_entry(path, embs)
    return embs, False


def _write_entry(path: Path, embs: Mapping[str, torch.Tensor]) -> None:
    """Write a cache entry through a temporary file of this writer's own (a writer that takes
    no lock, such as an older mmalign, may write the same entry at once), given the umask's
    permissions before the rename, so the other users of a shared cache can read it
    (safetensors' `save_file` (0.8) leaves its files 0600: `make_readable`)."""
    from safetensors.torch import save_file

    tmp = path.parent / f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.partial"
    try:
        save_file({u: e.contiguous() for u, e in embs.items()}, str(tmp),
                  metadata={"prompt_format": str(PROMPT_FORMAT_VERSION)})  # fmt: skip
        make_readable(tmp)
        os.replace(tmp, path)  # replaces a stale entry under the same name
    finally:
        tmp.unlink(missing_ok=True)


def write_embeddings(
    embs: Mapping[str, torch.Tensor], out_dir: str | Path, meta: dict[str, Any]
) -> Path:
    """`out_dir/user_embeddings.safetensors` (one tensor per user id) and `.json` (settings)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "user_embeddings.safetensors"
    save_file({u: e.contiguous() for u, e in embs.items()}, str(path))
    make_readable(path)  # safetensors 0.8 leaves it 0600: a shared run folder's users read it
    width = next(iter(embs.values())).shape[-1] if embs else 0
    info = {**meta, "width": int(width), "users": sorted(embs)}
    (out / "user_embeddings.json").write_text(json.dumps(info, indent=1))
    return path


def load_embeddings(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a `user_embeddings.safetensors` (or its folder)."""
    from safetensors.torch import load_file

    p = Path(path)
    p = p / "user_embeddings.safetensors" if p.is_dir() else p
    if not p.is_file():
        raise InputError(f"no user embeddings at {path} (run `mmalign data user-embed` first)")
    return dict(load_file(str(p)))


def examples_from_pairs(ds: Any) -> tuple[dict[str, list[Example]], int]:
    """Per-user examples from PreferencePair rows with a `user_id` column, in row order; the
    preferred image is the one the label picks (no label: chosen, as PreferencePair reads it).
    Returns (examples, ties skipped)."""
    if "user_id" not in ds.column_names:
        raise InputError("the data has no user_id column: PPD needs per-user pairs")
    out: dict[str, list[Example]] = {}
    ties = 0
    for row in ds:
        label = 1.0 if row.get("label") is None else float(row["label"])  # None: chosen wins
        # every user in the data is listed, one whose pairs are all ties with no examples, so
        # the shots check names it instead of the user vanishing from the output
        user_examples = out.setdefault(str(row["user_id"]), [])
        if label == 0.5:
            ties += 1
            continue
        a, b = (row["chosen"], row["rejected"]) if label > 0.5 else (row["rejected"], row["chosen"])
        user_examples.append((str(row["prompt"]), a, b))
    return out, ties
