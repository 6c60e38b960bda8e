"""Text and VAE encoding for flow-matching pipelines (SD3, FLUX) and their pre-encoding cache.

Per pair: VAE latents of both images as these models train on them, `(z - shift) * scale`
(SD3 and FLUX VAEs carry a `shift_factor`), the prompt's sequence embeddings (SD3: CLIP-L and
CLIP-G side by side, padded to the T5 width, then T5; FLUX: T5) and the pooled CLIP embedding.
The T5 sequence is the large part (FLUX.1: 512 x 4096 numbers a prompt), so text embeddings
are kept in float16 on both paths, every step or from the cache, and training sees the same
numbers either way. The cache itself is `encode.precompute`'s safetensors shards; its key
covers every text encoder, the VAE, the T5 length, the resolution, the data and the version of
the image reading it shares with the DDPM cache (`encode.CACHE_VERSION`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from . import encode
from .encode import VAE_BATCH_SIZE, Encoder, weights_checksum
from .flow_load import FlowModel, default_max_sequence

TEXT_DTYPE = torch.float16  # the cached (and per-step) text embeddings: half the bytes of fp32
FLOW_CACHE_VERSION = 1


class FlowEncoder(Encoder):
    """`text(prompts)` -> prompt_embeds [B,L,D] + pooled [B,P] (float16);
    `latents(pixels, seeds)` -> shifted and scaled VAE latents (float32)."""

    def __init__(
        self,
        model: FlowModel,
        *,
        vae_batch_size: int | None = VAE_BATCH_SIZE,
        max_sequence_length: int | None = None,
    ):
        super().__init__(model, vae_batch_size=vae_batch_size)  # type: ignore[arg-type]
        self.max_sequence_length = max_sequence_length or default_max_sequence(
            model.pipe, model.family
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.pipe.text_encoder.parameters()).device

    @torch.no_grad()
    def text(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        pipe, n = self.model.pipe, self.max_sequence_length
        if self.model.family == "sd3":
            out = pipe.encode_prompt(
                prompts, None, None, device=self.device, num_images_per_prompt=1,
                do_classifier_free_guidance=False, max_sequence_length=n,
            )  # fmt: skip
            embeds, pooled = out[0], out[2]
        else:
            embeds, pooled, _ = pipe.encode_prompt(
                prompts, None, device=self.device, max_sequence_length=n
            )
        return {"prompt_embeds": embeds.to(TEXT_DTYPE), "pooled": pooled.to(TEXT_DTYPE)}

    @torch.no_grad()
    def latents(self, pixels: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """`Encoder.latents` (seeded posterior draw, times the scale), then minus
        shift * scale: the `(z - shift) * scale` SD3 and FLUX train on."""
        config = self.model.pipe.vae.config
        scaled = super().latents(pixels, seeds).float()
        shift = float(config.get("shift_factor") or 0.0)
        return scaled - shift * float(config.scaling_factor)


def flow_fingerprint(
    model: FlowModel, resolution: int, data_fingerprint: str, rows: int, max_sequence: int
) -> str:
    """Cache key: every encoder's config, weights and dtype, T5 length, resolution, data, and
    the DDPM cache's version too: both caches read the images the same way (`PairImages`), so a
    change there (2: 16-bit greyscale read at its bit depth, not clipped) rebuilds flow caches."""
    encoders = [model.pipe.vae, *model.text_encoders]
    payload = {
        "version": FLOW_CACHE_VERSION,
        "pixels_version": encode.CACHE_VERSION,  # read at call time: the shared image reading
        "family": model.family,
        "configs": [dict(e.config) if isinstance(e.config, dict) else e.config.to_dict()
                    for e in encoders],
        "weights": [weights_checksum(e) for e in encoders],
        "dtypes": [str(e.dtype) for e in encoders],
        "text_dtype": str(TEXT_DTYPE),
        "max_sequence": max_sequence,
        "resolution": resolution,
        "data": data_fingerprint,
        "rows": rows,
    }  # fmt: skip
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def cache_size(folder: str | Path) -> dict[str, float]:
    """Bytes on disk of a pre-encoding cache, in MB, split into text embeddings and latents."""
    from safetensors import safe_open

    sizes = {"total_mb": 0.0, "text_mb": 0.0, "latents_mb": 0.0}
    for shard in sorted(Path(folder).glob("shard-*.safetensors")):
        sizes["total_mb"] += shard.stat().st_size / 2**20
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                s = f.get_slice(key)
                numel = 1
                for d in s.get_shape():
                    numel *= d
                mb = numel * torch.empty(0, dtype=_DTYPES[s.get_dtype()]).element_size() / 2**20
                if key in ("prompt_embeds", "pooled"):
                    sizes["text_mb"] += mb
                elif key == "latents":
                    sizes["latents_mb"] += mb
    return {k: round(v, 2) for k, v in sizes.items()}


_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
           "F64": torch.float64, "I64": torch.int64, "I32": torch.int32}  # fmt: skip
