"""Re-Align's embeddings and what compares them: image embedders for retrieving similar images
(`ImageIndex`, cosine top-k over a pool), text embedders for the similarity filter
(`dissimilar`). Every embedder returns L2-normalised rows, so a dot product is a cosine.

Why `BagOfWordsEmbedder` is the default text embedder and `TokenEmbeddingEmbedder` is not:
see `mmalign.vlm.realign`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from ..config import InputError
from ..data.schema import to_pil_image, to_rgb
from ..hub import download_hint
from .collate import image_key
from .load import VLM
from .realign_lexicon import WORD

THRESHOLD = 0.95  # Re-Align: keep the first fill whose cosine to y_w is < 0.95


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
            chunk = [to_rgb(to_pil_image(x)) for x in items[start : start + self.batch_size]]
            # one sample per image: a per-prompt processor (Idefics3) reads a flat list as one
            # prompt's images and would give the chunk a single embedding
            inputs = image_processor(images=[[im] for im in chunk], return_tensors="pt")
            inputs = {k: v.to(device) for k, v in inputs.items() if torch.is_tensor(v)}
            features = core.model.get_image_features(**inputs, return_dict=True).pooler_output
            out += [f.reshape(-1, f.shape[-1]).float().mean(0) for f in features]
        return _normalise(torch.stack(out).cpu())


def clip_repo(model_name: str, pretrained: str | None) -> str | None:
    """The hub repo open_clip downloads `model_name`'s weights `pretrained` (an open_clip tag)
    from (`ViT-B-32`, `openai` -> `timm/vit_base_patch32_clip_224.openai`), as its pretrained
    config names it; None for no weights, a local file, a tag open_clip does not know (its
    own error lists the tags) or one it fetches from a URL only."""
    if pretrained is None or Path(pretrained).expanduser().is_file():
        return None
    import open_clip

    return (open_clip.get_pretrained_cfg(model_name, pretrained).get("hf_hub") or "").strip(
        "/"
    ) or None


def _clip_message(model_name: str, pretrained: str, repo: str, why: str) -> str:
    import open_clip

    local = "give a local checkpoint file with --clip-pretrained FILE"
    quick = open_clip.get_pretrained_cfg(model_name, pretrained).get("quick_gelu", False)
    if quick and "quickgelu" not in model_name:  # a local file does not carry the tag's config
        local += (
            f" and --clip {model_name}-quickgelu (the activation '{pretrained}' was trained with)"
        )
    return (
        f"--clip {model_name} --clip-pretrained {pretrained}: open_clip's weights, hub repo "
        f"{repo}, {why}: download them with {download_hint(repo)} where there is network, "
        f"or {local}"
    )


def clip_weights_problem(model_name: str, pretrained: str | None) -> str | None:
    """Why open_clip cannot get the weights of `--clip model_name --clip-pretrained
    pretrained` now, loading nothing (one line naming the hub repo and the local option), or
    None: offline and not in the cache, or online and not in the cache with a hub that cannot
    be reached (`hub.hub_reachable`, one quick request, instead of open_clip's minute of
    retries)."""
    from ..hub import Need, hub_reachable, is_cached, offline

    repo = clip_repo(model_name, pretrained)
    if repo is None or is_cached(Need(repo, "--clip-pretrained")):
        return None
    if offline():
        why = "is not in the local cache (offline)"
    elif not hub_reachable():
        why = "could not be downloaded (no connection to the hub)"
    else:
        return None  # the hub answers: open_clip downloads them
    return _clip_message(model_name, str(pretrained), repo, why)


def require_clip_weights(model_name: str, pretrained: str | None) -> None:
    """Raise `clip_weights_problem` as an `InputError`, if there is one."""
    message = clip_weights_problem(model_name, pretrained)
    if message is not None:
        raise InputError(message)


def clip_download_error(err: BaseException, model_name: str, pretrained: str | None) -> str | None:
    """`clip_weights_problem`'s message for a hub or network failure open_clip met downloading
    the weights (its own error ends in `hf download ID`, with no id), None for others."""
    from ..hub import hub_error_message

    repo = clip_repo(model_name, pretrained)
    hub_failure = hub_error_message(err, repo, "--clip-pretrained") if repo else None
    if repo is None or (hub_failure is None and "Failed to download" not in str(err)):
        return None
    why = f"could not be downloaded ({str(err).splitlines()[0][:300]})"
    return _clip_message(model_name, str(pretrained), repo, why)


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
        require_clip_weights(model_name, pretrained)  # at once, not after a minute of retries
        # OpenAI's CLIPs were trained with QuickGELU; open_clip >= 3 builds `ViT-B-32` with
        # nn.GELU under the `openai` tag and only warns: the tag's config says which it needs
        tag = pretrained if pretrained and not Path(str(pretrained)).expanduser().exists() else None
        cfg = open_clip.get_pretrained_cfg(model_name, tag) if tag else {}
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, device=device,
                force_quick_gelu=bool(cfg.get("quick_gelu", False)),
            )  # fmt: skip
        except Exception as err:  # a download that failed: name the repo and the local option
            message = clip_download_error(err, model_name, pretrained)
            if message is None:
                raise
            raise InputError(message) from err
        self.model.eval()
        self.batch_size, self.device = batch_size, device

    @torch.no_grad()
    def embed(self, items: Sequence[Any]) -> torch.Tensor:
        out = []
        for start in tqdm(range(0, len(items), self.batch_size), desc="embedding images (CLIP)",
                          unit="batch", leave=False):  # fmt: skip
            chunk = items[start : start + self.batch_size]
            pixels = torch.stack([self.preprocess(to_rgb(to_pil_image(x))) for x in chunk])
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
            for word in WORD.findall(text.lower()):
                out[i, self._bucket(word)] += 1
        return _normalise(out)


def dissimilar(candidates: Sequence[str], references: Sequence[str], embedder: Embedder,
               threshold: float = THRESHOLD) -> list[tuple[bool, float]]:  # fmt: skip
    """Re-Align's filter, row by row: (cosine of candidate i to reference i strictly below
    `threshold`, that cosine). A fill that passes becomes the rejected answer y_l."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates for {len(references)} references")
    if not candidates:
        return []
    emb = embedder.embed([*candidates, *references])
    sims = (emb[: len(candidates)] * emb[len(candidates) :]).sum(-1).tolist()
    return [(sim < threshold, sim) for sim in sims]


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
