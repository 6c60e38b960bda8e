"""Load flow-matching pipelines (SD3 / SD3.5 and FLUX.1) and tell them from DDPM ones.

The family comes from the pipeline itself, never from its name: a flow-matching scheduler
(`FlowMatchEulerDiscreteScheduler` and its siblings) makes it a flow model, and the
transformer's class makes it `sd3` (`SD3Transformer2DModel`: three text encoders, latents as
images) or `flux` (`FluxTransformer2DModel`: CLIP + T5, latents packed 2x2 into tokens, and
FLUX.1-dev's guidance embedding); a transformer that reads more than the VAE's latents (the
control and fill variants) is refused. `process_of` reads the same fact from a folder's
`model_index.json` before any weights load, so `mmalign train` picks the recipe without
loading the model twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..hub import Need, hub_cache, hub_errors, offline, require
from .source import DTYPES, dtype_kwarg, pipeline_class, resolve_model

FlowFamily = Literal["sd3", "flux"]
Process = Literal["ddpm", "flow"]
# diffusers' flow-matching schedulers: a pipeline saved with one of these trains by flow matching
FLOW_SCHEDULERS = (
    "FlowMatchEulerDiscreteScheduler",
    "FlowMatchHeunDiscreteScheduler",
    "FlowMatchLCMScheduler",
)
# the maximum T5 length each family's pipeline uses by default (`max_sequence_length`)
DEFAULT_MAX_SEQUENCE = {"sd3": 256, "flux": 512}
# FLUX.1-schnell's (no guidance embedding): BFL's reference loads its T5 with max_length 256,
# and diffusers' FLUX page says schnell's max_sequence_length cannot be more than 256
SCHNELL_MAX_SEQUENCE = 256


def _flux_without_guidance(pipe: Any) -> bool:
    transformer = getattr(pipe, "transformer", None)
    config = getattr(transformer, "config", None)
    return type(pipe).__name__ == "FluxPipeline" and not getattr(config, "guidance_embeds", True)


def default_max_sequence(pipe: Any, family: FlowFamily) -> int:
    """T5 tokens to encode with when nothing names a length: the family's pipeline default,
    except for SD3 without T5, which gets as many T5-width zeros as its CLIP tokenizer has
    tokens (toy-flow is trained so). The zeros carry no text, but every one of them is a
    token the joint attention attends to and the MLPs process: 256 of them would triple a
    small model's sequence, and a count other than the one a model was trained with shifts
    its attention. FLUX without a guidance embedding (schnell) gets 256, its training length."""
    if family == "sd3" and getattr(pipe, "text_encoder_3", None) is None:
        return int(pipe.tokenizer_max_length)
    if family == "flux" and _flux_without_guidance(pipe):
        return SCHNELL_MAX_SEQUENCE
    return DEFAULT_MAX_SEQUENCE[family]


def sampling_kwargs(pipe: Any) -> dict[str, int]:
    """Extra arguments a pipeline call needs to sample as its training encoded the prompts:
    a tuned run's own `max_sequence_length` (set by `load_tuned`), else SD3 without T5's or
    FLUX-schnell's `default_max_sequence`, else nothing (the pipeline's default)."""
    trained = getattr(pipe, "mmalign_max_sequence_length", None)
    if trained:
        return {"max_sequence_length": int(trained)}
    if type(pipe).__name__ == "StableDiffusion3Pipeline" and pipe.text_encoder_3 is None:
        return {"max_sequence_length": default_max_sequence(pipe, "sd3")}
    if _flux_without_guidance(pipe):
        return {"max_sequence_length": default_max_sequence(pipe, "flux")}
    return {}


@dataclass
class FlowModel:
    """A loaded flow-matching pipeline and what training needs to know about it."""

    pipe: Any  # StableDiffusion3Pipeline | FluxPipeline
    family: FlowFamily
    source: str

    @property
    def transformer(self) -> torch.nn.Module:
        return self.pipe.transformer

    @property
    def unet(self) -> torch.nn.Module:
        """The denoiser under the name the DDPM code paths use (the recipe's `model`)."""
        return self.pipe.transformer

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    @property
    def default_resolution(self) -> int:
        if self.family == "sd3":
            return int(self.transformer.config.sample_size) * self.vae_scale
        return 1024  # FLUX.1's native size; its transformer config names none

    @property
    def max_resolution(self) -> int | None:
        """The largest image side the transformer takes (`max_resolution`)."""
        return max_resolution(self.pipe)

    @property
    def guidance_embeds(self) -> bool:
        """FLUX.1-dev embeds the guidance value; schnell and SD3 do not."""
        return bool(getattr(self.transformer.config, "guidance_embeds", False))

    @property
    def has_t5(self) -> bool:
        name = "text_encoder_3" if self.family == "sd3" else "text_encoder_2"
        return getattr(self.pipe, name, None) is not None

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        names = ("text_encoder", "text_encoder_2", "text_encoder_3")
        return [m for m in (getattr(self.pipe, n, None) for n in names) if m is not None]


def max_resolution(pipe: Any) -> int | None:
    """The largest image side `pipe`'s transformer takes: an SD3 transformer's position table
    covers `pos_embed_max_size` latent patches a side, so `pos_embed_max_size x patch_size x`
    the VAE factor pixels. None where nothing bounds it (FLUX's RoPE, a UNet, an SD3
    transformer without the cropped table)."""
    config = getattr(getattr(pipe, "transformer", None), "config", None)
    table = getattr(config, "pos_embed_max_size", None)
    patch = getattr(config, "patch_size", None)
    vae = getattr(getattr(pipe, "vae", None), "config", None)
    if not table or not patch or vae is None:
        return None
    return int(table) * int(patch) * 2 ** (len(vae.block_out_channels) - 1)


def check_resolution(
    pipe: Any, resolution: int, key: str, error: type[Exception] = ValueError
) -> None:
    """Raise `error` naming `key` when `resolution` is beyond `max_resolution(pipe)`: diffusers
    would fail only inside the first transformer call, with a latent-size message."""
    largest = max_resolution(pipe)
    if largest is None or resolution <= largest:
        return
    config = pipe.transformer.config
    raise error(
        f"{key} {resolution} is larger than this model takes: give at most {largest} px (its "
        f"SD3 transformer's position embedding covers pos_embed_max_size "
        f"{config.pos_embed_max_size} latent patches a side, x patch_size {config.patch_size} "
        f"x VAE factor {largest // (config.pos_embed_max_size * config.patch_size)})"
    )


def is_flow_scheduler(scheduler: Any) -> bool:
    return type(scheduler).__name__ in FLOW_SCHEDULERS or hasattr(scheduler, "scale_noise")


def flow_family(pipe: Any) -> FlowFamily:
    """`sd3` or `flux` from the pipeline's scheduler and transformer classes."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    if not is_flow_scheduler(getattr(pipe, "scheduler", None)):
        raise ValueError(
            f"this {type(pipe).__name__} does not use a flow-matching scheduler "
            f"(it has {type(getattr(pipe, 'scheduler', None)).__name__})"
        )
    transformer = getattr(pipe, "transformer", None)
    if isinstance(transformer, SD3Transformer2DModel):
        return _text_to_image(pipe, "sd3")
    if isinstance(transformer, FluxTransformer2DModel):
        return _text_to_image(pipe, "flux")
    raise ValueError(
        f"mmalign trains flow-matching StableDiffusion3Pipeline and FluxPipeline models; this "
        f"{type(pipe).__name__} has a {type(transformer).__name__} denoiser"
    )


def _text_to_image(pipe: Any, family: FlowFamily) -> FlowFamily:
    """`family`, once the transformer reads exactly the VAE's latents (SD3: its channels; FLUX:
    4x them, packed 2x2). Control and fill variants (FLUX.1-Canny / Depth / Fill-dev) read the
    control image's or the mask's channels beside them: refused here, not as a shape error in
    the first step."""
    vae = getattr(pipe, "vae", None)
    if vae is None:
        return family
    latent = int(vae.config.latent_channels) * (4 if family == "flux" else 1)
    given = int(pipe.transformer.config.in_channels)
    if given != latent:
        raise ValueError(
            f"this {type(pipe).__name__}'s {type(pipe.transformer).__name__} takes {given} input "
            f"channels, where a text-to-image {family.upper()} transformer takes the "
            f"{'packed ' if family == 'flux' else ''}latents' {latent}: an image-conditioned "
            "variant (control, fill, inpainting), which mmalign does not train"
        )
    return family


def _model_index(source: str, revision: str | None = None) -> dict[str, Any] | None:
    local = Path(source) / "model_index.json"
    if local.is_file():
        return dict(json.loads(local.read_text()))
    if Path(source).exists():
        return None
    try:
        from huggingface_hub import hf_hub_download

        # the cache and offline mode as mmalign reads them now: huggingface_hub reads
        # HF_HUB_OFFLINE and the cache once, at import, and would retry a dead hub for ~23 s
        path = hf_hub_download(source, "model_index.json", revision=revision,
                               cache_dir=hub_cache(), local_files_only=offline())  # fmt: skip
        return dict(json.loads(Path(path).read_text()))
    except Exception:  # offline or unknown: the loader names the problem later
        return None


def _saved_without_t5(source: str, revision: str | None) -> bool:
    """An SD3 folder saved with no T5 (toy-flow): `save_pretrained` leaves the component out
    of `model_index.json`, and `from_pretrained` then needs it passed as None."""
    index = _model_index(source, revision) or {}
    saved = index.get("text_encoder_3") or [None, None]
    return index.get("_class_name") == "StableDiffusion3Pipeline" and saved[-1] is None


def is_toy_flow(source: str) -> bool:
    """A local SD3 folder saved without T5, as `mmalign toy build` saves toy-flow: the toy
    pair builders can sample it (toy:pairs on toy-flow is toy-flow's own samples)."""
    return Path(source).is_dir() and _saved_without_t5(source, None)


def process_of(name_or_path: str | Path, revision: str | None = None) -> Process | None:
    """`flow` or `ddpm` from the scheduler class a pipeline folder (or hub id) was saved with;
    None when there is no `model_index.json` to read."""
    index = _model_index(resolve_model(name_or_path), revision)
    if index is None:
        return None
    scheduler = index.get("scheduler") or [None, None]
    return "flow" if scheduler[-1] in FLOW_SCHEDULERS else "ddpm"


def load_flow_pipeline(
    name_or_path: str | Path,
    *,
    dtype: str = "float32",
    variant: str | None = None,
    revision: str | None = None,
    drop_t5: bool = False,
    device: str | torch.device | None = None,
    key: str = "model",
) -> FlowModel:
    """Load an SD3 / SD3.5 or FLUX.1 pipeline. The transformer and text encoders take
    `dtype`; the VAE stays float32 (as diffusers' training scripts keep it). `drop_t5`
    loads SD3 without its T5 encoder (the pipeline then feeds zeros in its place, as SD3
    allows); FLUX cannot drop it. `key`: where the user named the model, for messages."""
    from diffusers import AutoencoderKL, DiffusionPipeline

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    source = resolve_model(name_or_path)
    if Path(source).exists() and pipeline_class(source) is None:
        raise FileNotFoundError(
            f"{source} is not a diffusers pipeline folder (no model_index.json)"
        )
    require([Need(source, key, file="model_index.json", revision=revision)])
    kwargs: dict[str, Any] = {**dtype_kwarg(DTYPES[dtype]), "variant": variant}
    if revision is not None:
        kwargs["revision"] = revision
    if dtype != "float32":
        with hub_errors(source, key):
            kwargs["vae"] = AutoencoderKL.from_pretrained(
                source, subfolder="vae", variant=variant, revision=revision,
                **dtype_kwarg(torch.float32),
            )  # fmt: skip
    no_t5 = "diffusion.drop_t5: FLUX needs its T5 encoder; only SD3 can drop it"
    if drop_t5:
        # the class from model_index.json, a hub id's too (`pipeline_class` reads folders
        # only: a hub FLUX id loaded with its T5, the drop ignored with a warning)
        if (_model_index(source, revision) or {}).get("_class_name") == "FluxPipeline":
            raise ValueError(no_t5)
        kwargs.update(text_encoder_3=None, tokenizer_3=None)
    elif _saved_without_t5(source, revision):
        kwargs.update(text_encoder_3=None, tokenizer_3=None)
    with hub_errors(source, key):
        pipe = DiffusionPipeline.from_pretrained(source, **kwargs)
    family = flow_family(pipe)
    if drop_t5 and family != "sd3":  # an index that could not be read before the load
        raise ValueError(no_t5)
    if device is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return FlowModel(pipe, family, source)


def flow_model(pipe: Any, source: str = "in-memory") -> FlowModel:
    """Wrap an already built pipeline (tests, benchmarks)."""
    return FlowModel(pipe, flow_family(pipe), source)
