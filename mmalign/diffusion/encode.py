"""Text and VAE encoding, and the pre-encoding cache.

Training needs, per pair: VAE latents of both images, the prompt's text embeddings (SDXL:
plus the pooled embedding) and SDXL's time ids. `Encoder` computes them from pixels; the
cache (`precompute`) runs it once over the dataset and writes safetensors shards, so training
streams `EncodedPairs` and never runs the VAE or the text encoders. A cache is keyed by a
fingerprint of the encoders (config and weights), the resolution and the data (and the rows it
holds); a change in any of them builds a new one. A build holds a file lock (`<cache>.lock`):
two runs wanting the same cache at once (configs/toy/dpo.yaml and mapo.yaml side by side)
build it once.

A run that reads fewer rows than the data set holds (`train/sampler.py rows_read`: shorter
than one epoch) encodes only those (`precompute(rows=...)`); the cache keeps their indices
(`rows.safetensors`) and `EncodedPairs` is indexed by the data set's rows as before, so the
loop's sampler, the seeds and a resume are unchanged. A row it does not hold is an error, never
another row's encoding.

Latents are drawn from the VAE posterior with a generator seeded by the row index, so the
cached and the uncached paths, and a cache of all rows or of some, train on the same latents.
An SDXL VAE whose config sets `latents_mean` / `latents_std` (Playground v2.5's) is normalised
with them as diffusers' SDXL pipelines do (`to_model_latents`, `decode_latents`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..files import make_readable
from .load import DiffusionModel

# 2: 16-bit and float greyscale images read at their bit depth (schema.grey_unit; they were
# clipped white), transparent images composited onto white (schema.to_rgb), and SDXL latents
# normalised by the VAE's latents_mean / latents_std
CACHE_VERSION = 2
SHARD_ROWS = 4096
ROWS_FILE = "rows.safetensors"  # the data set rows a partial cache holds, in its order
VAE_BATCH_SIZE = 8  # images per VAE call (diffusion.vae_batch_size); see Encoder.latents


def latent_stats(model: DiffusionModel) -> tuple[list[float], list[float]] | None:
    """The VAE config's `latents_mean` and `latents_std` where the family's pipeline applies
    them, else None. diffusers' SDXL pipelines normalise with them when the config has both
    (StableDiffusionXLPipeline before decoding, its img2img pipeline after encoding);
    StableDiffusionPipeline (SD1.5) never reads them, so neither does training an SD1.5 model."""
    config = model.pipe.vae.config
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if model.family != "sdxl" or mean is None or std is None:
        return None
    return list(mean), list(std)


def _channel_view(values: list[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values).view(1, -1, 1, 1).to(like.device, like.dtype)


def to_model_latents(model: DiffusionModel, z: torch.Tensor) -> torch.Tensor:
    """The denoiser's latents of raw VAE latents z [N,C,h,w]: `z * scaling_factor`, or with
    latent statistics `(z - mean) * scaling_factor / std` (StableDiffusionXLImg2ImgPipeline's
    `prepare_latents`, in this order)."""
    scale = model.pipe.vae.config.scaling_factor
    stats = latent_stats(model)
    if stats is None:
        return z * scale
    return (z - _channel_view(stats[0], z)) * scale / _channel_view(stats[1], z)


@torch.no_grad()
def decode_latents(model: DiffusionModel, latents: torch.Tensor) -> torch.Tensor:
    """Pixels [N,3,H,W] in [0,1] of the denoiser's latents, undoing `to_model_latents` as
    StableDiffusionXLPipeline does before `vae.decode` (`latents * std / scaling_factor +
    mean`; without statistics `latents / scaling_factor`)."""
    vae = model.pipe.vae
    first = next(vae.parameters())
    latents = latents.to(first.device, first.dtype)
    scale = vae.config.scaling_factor
    stats = latent_stats(model)
    if stats is None:
        z = latents / scale
    else:
        z = latents * _channel_view(stats[1], latents) / scale + _channel_view(stats[0], latents)
    x = vae.decode(z).sample
    return (x.float() / 2 + 0.5).clamp(0, 1)


class Encoder:
    """The frozen encoders of a pipeline: `text(prompts)` and `latents(pixels, seeds)`."""

    def __init__(self, model: DiffusionModel, *, vae_batch_size: int | None = VAE_BATCH_SIZE):
        self.model = model
        self.vae_batch_size = vae_batch_size
        self._empty: dict[str, torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return self.model.pipe.text_encoder.device

    @torch.no_grad()
    def text(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """`prompt_embeds` [B,L,D] (and `pooled` [B,P] for SDXL), in the text encoders' dtype."""
        pipe = self.model.pipe
        out = pipe.encode_prompt(
            prompts,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        encoded = {"prompt_embeds": out[0]}
        if self.model.family == "sdxl":
            encoded["pooled"] = out[2]
        return encoded

    def empty(self) -> dict[str, torch.Tensor]:
        """The empty prompt's embeddings [1,...]: what caption dropout conditions on."""
        if self._empty is None:
            self._empty = {k: v.cpu() for k, v in self.text([""]).items()}
        return self._empty

    @torch.no_grad()
    def latents(self, pixels: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """Scaled latents of pixels [N,3,H,W] in [-1,1]; draw i uses generator `seeds[i]`.

        The VAE runs on `vae_batch_size` images at a time (None: all at once), as diffusers'
        Diffusion-DPO script does: one call over 2B images at 64 px was 70 ms against 65 ms in
        chunks of 8 on this project's CPU, and chunks bound the VAE's activation memory at
        512 px. The posterior draw is what `DiagonalGaussianDistribution.sample` does with one
        generator per image, with one generator re-seeded per image instead (the same numbers).
        """
        vae = self.model.pipe.vae
        # The first parameter, not `vae.device`/`vae.dtype`: diffusers' properties walk every
        # submodule looking for offloading hooks, per image (about 4 ms per step here).
        first = next(vae.parameters())
        device, dtype = first.device, first.dtype
        pixels = pixels.to(device, dtype)
        size = self.vae_batch_size or len(pixels)
        dists = [vae.encode(pixels[i : i + size]).latent_dist for i in range(0, len(pixels), size)]
        mean = torch.cat([d.mean for d in dists])
        std = torch.cat([d.std for d in dists])
        noise = torch.empty_like(mean)
        gen = torch.Generator(device)
        for i, seed in enumerate(seeds):
            gen.manual_seed(int(seed))
            noise[i] = torch.randn(mean.shape[1:], generator=gen, device=device, dtype=dtype)
        return to_model_latents(self.model, mean + std * noise)

    def encode(self, batch: dict[str, Any], rows: list[int]) -> dict[str, torch.Tensor]:
        """A collated `PairImages` batch -> latents [B,2,C,h,w], text embeddings, time ids."""
        pixels = batch["pixels"]
        b = pixels.shape[0]
        seeds = [2 * r for r in rows] + [2 * r + 1 for r in rows]
        flat = torch.cat([pixels[:, 0], pixels[:, 1]])
        lat = self.latents(flat, seeds)
        out = {"latents": torch.stack([lat[:b], lat[b:]], dim=1)}
        out.update(self.text(list(batch["prompt"])))
        out["time_ids"] = batch["time_ids"]
        out["label"] = batch["label"]
        return out


CHECKSUM_CHUNK = 1 << 22  # elements per float64 copy (32 MB): bounds the checksum's memory


@torch.no_grad()
def weights_checksum(module: torch.nn.Module) -> list[float]:
    """The cache key's weight fingerprint: the sum and the sum of squares of every parameter.

    Every tensor, not only the first and last (as before): a text encoder with a LoRA merged
    into its attention layers, or a VAE whose encoder was fine-tuned, kept its first and last
    tensors and so the key of the base model's cache, whose embeddings and latents then
    trained the other model. Read once per run, in chunks (an SDXL embedding table in float64
    would be 0.5 GB at once)."""
    sums = []
    for param in module.parameters():
        flat = param.detach().reshape(-1)
        total = flat.new_zeros(2, dtype=torch.float64)
        for i in range(0, flat.numel(), CHECKSUM_CHUNK):
            chunk = flat[i : i + CHECKSUM_CHUNK].double()
            total += torch.stack([chunk.sum(), chunk.square().sum()])
        sums.append(total.cpu())  # one copy per tensor; no sync per chunk
    return torch.cat(sums).tolist() if sums else []


def fingerprint(model: DiffusionModel, resolution: int, data_fingerprint: str, rows: int) -> str:
    pipe = model.pipe
    encoders = [pipe.vae, pipe.text_encoder] + (
        [pipe.text_encoder_2] if model.family == "sdxl" else []
    )
    payload = {
        "version": CACHE_VERSION,
        "family": model.family,
        "configs": [dict(e.config) if isinstance(e.config, dict) else e.config.to_dict()
                    for e in encoders],
        "weights": [weights_checksum(e) for e in encoders],
        "dtypes": [str(e.dtype) for e in encoders],
        "resolution": resolution,
        "data": data_fingerprint,
        "rows": rows,
    }  # fmt: skip
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _current(out_dir: Path, key: str) -> bool:
    meta = out_dir / "meta.json"
    return meta.is_file() and json.loads(meta.read_text()).get("key") == key


def precompute(
    encoder: Encoder,
    images: torch.utils.data.Dataset,
    out_dir: str | Path,
    key: str,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    progress: bool = True,
    rows: Sequence[int] | None = None,
) -> Path:
    """Encode every row of `images` (a `PairImages`), or only `rows` (the rows a run reads:
    `key` must name them), once into `out_dir` (skipped if a cache with the same `key` is
    there). Written to a temporary folder, then renamed: a cache is complete or absent
    (`data.cache.build_once`): a second run wanting the same cache waits on its lock, then
    reuses it (before, both built into one `.partial` folder and one crashed)."""
    from ..data.cache import build_once

    def build(tmp: Path) -> None:
        _build(encoder, images, tmp, key, batch_size, num_workers, progress, rows)

    return build_once(Path(out_dir), build, ready=lambda folder: _current(folder, key))


def _build(
    encoder: Encoder,
    images: torch.utils.data.Dataset,
    tmp: Path,
    key: str,
    batch_size: int,
    num_workers: int,
    progress: bool,
    subset: Sequence[int] | None = None,
) -> None:
    """Encode `images` (or its rows `subset`) into the new folder `tmp` (shards, the empty
    conditioning, meta.json; for a subset its row indices too)."""
    from .data import collate

    tmp.mkdir(parents=True)
    index = list(range(len(images))) if subset is None else [int(r) for r in subset]
    source = images if subset is None else torch.utils.data.Subset(images, index)
    loader = torch.utils.data.DataLoader(
        source, batch_size=batch_size, num_workers=num_workers, collate_fn=collate
    )
    shard: dict[str, list[torch.Tensor]] = {}
    shards, done = 0, 0

    def flush() -> None:
        nonlocal shards
        if shard:
            tensors = {k: torch.cat(v).contiguous() for k, v in shard.items()}
            save_file(tensors, str(tmp / f"shard-{shards:05d}.safetensors"))
            shards += 1
            shard.clear()

    with tqdm(total=len(index), desc="pre-encoding", unit="pair", disable=not progress) as bar:
        for batch in loader:
            rows = index[done : done + len(batch["prompt"])]  # the data set's: they seed latents
            # to the CPU batch by batch: a shard of the accelerator's tensors (FLUX's T5
            # embeddings, ~16 GB for 4096 rows, doubled by the concatenation) ran it out of memory
            for k, v in encoder.encode(batch, rows).items():
                shard.setdefault(k, []).append(v.cpu())
            done += len(rows)
            bar.update(len(rows))
            if sum(len(x) for x in shard["label"]) >= SHARD_ROWS:
                flush()
    flush()
    save_file(
        {k: v.contiguous() for k, v in encoder.empty().items()}, str(tmp / "empty.safetensors")
    )
    meta: dict[str, Any] = {"key": key, "rows": done, "shards": shards, "version": CACHE_VERSION}
    if subset is not None:  # `of`: the data set's rows, what the loop's sampler draws from
        save_file({"rows": torch.tensor(index, dtype=torch.int64)}, str(tmp / ROWS_FILE))
        meta["of"] = len(images)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    make_readable(tmp)  # shared caches: safetensors 0.8 leaves the shards 0600


class EncodedPairs(torch.utils.data.Dataset):
    """Rows of a pre-encoding cache, read lazily from its safetensors shards, indexed by the
    data set's rows: a cache of some rows (`precompute(rows=...)`) has the data set's length
    and refuses a row it does not hold."""

    def __init__(self, cache_dir: str | Path):
        self.dir = Path(cache_dir)
        meta = json.loads((self.dir / "meta.json").read_text())
        self.encoded = int(meta["rows"])
        self.rows = int(meta.get("of", self.encoded))
        self._position: dict[int, int] | None = None  # data set row -> place in the shards
        if (self.dir / ROWS_FILE).is_file():
            with safe_open(str(self.dir / ROWS_FILE), framework="pt") as f:
                held = f.get_tensor("rows").tolist()
            self._position = {int(r): i for i, r in enumerate(held)}
        self._files = [
            safe_open(str(self.dir / f"shard-{i:05d}.safetensors"), framework="pt")
            for i in range(int(meta["shards"]))
        ]
        self._sizes = [f.get_slice("label").get_shape()[0] for f in self._files]
        with safe_open(str(self.dir / "empty.safetensors"), framework="pt") as f:
            self.empty = {k: f.get_tensor(k) for k in f.keys()}

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i = int(index)
        if self._position is not None:
            if i not in self._position:  # LookupError: not IndexError, which ends an iteration
                raise LookupError(
                    f"row {i} is not in the pre-encoding cache {self.dir}: it holds the "
                    f"{self.encoded} of {self.rows} rows its run reads (train/sampler.py)"
                )
            i = self._position[i]
        for f, size in zip(self._files, self._sizes, strict=True):
            if i < size:
                return {k: f.get_slice(k)[i : i + 1][0] for k in f.keys()}
            i -= size
        raise IndexError(index)


def stack(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}
