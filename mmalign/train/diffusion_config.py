"""The `diffusion:` section of a recipe (`DiffusionConfig`) and its parts (`renoise:`,
`dense:`), re-exported by `mmalign.train.config`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ..config import ConfigError


def check_scorer(name: str, key: str, *, dense: bool = False) -> None:
    """Raise a ConfigError naming `key` for a reward scorer name that is not registered (with
    the closest one), or a toy scorer's argument it does not know (`toy:user:wram`); `dense`:
    the scorer must give heatmaps (toy:flaws, dense:<path>). Loads no model: a toy scorer is
    built (programmatic, no weights), a model scorer's weights load where it runs."""
    from ..rewards import SCORERS, split_name
    from ..suggest import did_you_mean

    if not isinstance(name, str) or not name:
        raise ConfigError(f"{key}: name a reward scorer, e.g. toy:fidelity, got {name!r}")
    if dense and name.startswith("toy:"):  # dense:<path> is a checkpoint, checked at the start
        heatmaps = [b for b, factory in SCORERS.items() if hasattr(factory, "dense")]
        if name.partition(":")[2] and not any(name.startswith(h) for h in heatmaps):
            raise ConfigError(
                f"{key}: {name!r} is no scorer that gives heatmaps; "
                f"{did_you_mean(name, heatmaps)} (use toy:flaws or dense:<path>)"
            )
    try:
        base, argument = split_name(name)
        if base.startswith("toy:"):  # programmatic, no weights: built now, checking its argument
            factory = SCORERS[base]
            factory(argument) if argument is not None else factory()
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from None


@dataclass
class RenoiseConfig:
    """`diffusion.renoise` (with `trajectory: renoise`): DDIM inversion steps over the whole
    schedule (None: 5 for SD1.5 and toy-sd, 10 for SDXL, as SmPO's released code), ReNoise
    iterations per step and the estimates [lo, hi) averaged (SmPO: 1 iteration, both averaged)."""

    steps: int | None = None
    iterations: int = 1
    average: list[int] | None = field(default_factory=lambda: [0, 2])

    def __post_init__(self) -> None:
        from ..diffusion.renoise import ReNoiseSettings

        average = tuple(self.average) if self.average is not None else None
        try:
            ReNoiseSettings(self.steps, self.iterations, average)  # type: ignore[arg-type]
        except ValueError as err:
            raise ConfigError(f"diffusion.{err}") from None


@dataclass
class DenseConfig:
    """`diffusion.dense:` ImageDoctor's dense weights (Guo et al. 2025; mmalign/diffusion/dense.py):
    each image's flaw heatmap, pooled to the latent grid, weights its per-pixel error by 1 - H.
    Computed once at the start (and kept in the pre-encoding cache with `precompute`)."""

    scorer: str  # toy:flaws (the toy's exact maps) or dense:<path> (a trained dense head)
    map: Literal["artifact", "misalignment", "both"] = "artifact"  # both: their pixelwise max
    # chosen: ImageDoctor's (the rejected image at 1); paired: the chosen image's weights on
    # both errors (mmalign's); both: each image its own map
    sides: Literal["chosen", "both", "paired"] = "chosen"
    batch_size: int = 64  # images per heatmap call
    device: str = "auto"  # where the dense head runs (dense:<path> only)
    normalize: bool = False  # w / mean(w) per image (mmalign's option, not ImageDoctor's)
    # weights only on pairs drawn at a timestep below this; the noisier ones keep the plain
    # error (mmalign's option, not ImageDoctor's: the shape and colour the fidelity preference
    # is about are settled at high noise, the flaws at low noise). null: every timestep
    max_timestep: int | None = None

    def __post_init__(self) -> None:
        if not self.scorer.startswith(("toy:", "dense:")):
            raise ValueError(
                f"diffusion.dense.scorer: {self.scorer!r} gives no heatmaps; "
                "use toy:flaws or dense:<path>"
            )
        check_scorer(self.scorer, "diffusion.dense.scorer", dense=True)
        if self.batch_size < 1:
            raise ValueError(f"diffusion.dense.batch_size must be >= 1, got {self.batch_size}")
        if self.max_timestep is not None and self.max_timestep < 1:
            raise ValueError(
                f"diffusion.dense.max_timestep must be >= 1 (or null), got {self.max_timestep}"
            )


@dataclass
class DiffusionConfig:
    """Diffusion-only settings (METHODS.md section 2)."""

    resolution: int | None = None  # None: the UNet's native size
    caption_dropout: float = 0.2  # share of pairs trained on the empty prompt (both images)
    # a dropped caption's embedding: the encoded "" (Diffusion-DPO) or SDXL's zeros (SDXL only)
    caption_dropout_embedding: Literal["empty", "zeros"] = "empty"
    precompute: bool = False  # encode latents + text once into a cache; never run the encoders
    cache_dir: str | None = None  # default: $MMALIGN_CACHE/encoded/<fingerprint>
    reference: Literal["auto", "adapters", "copy"] = "auto"  # auto: adapters with LoRA
    # Data as Diffusion-DPO's code reads it: resize filter (its bilinear) and horizontal flips
    # (it flips; off here because a flip contradicts prompts that say left or right).
    resize_filter: Literal["bilinear", "bicubic", "lanczos", "nearest"] = "bilinear"
    random_flip: bool = False
    vae_batch_size: int | None = 8  # images per VAE call (None: all at once)
    # torch.compile the denoiser's training calls (policy and reference; sampling stays
    # eager). The first steps compile (one to two minutes on a CPU); diffusion/compiled.py
    compile: bool = False
    # ImageDoctor dense weights (diffusion/dense.py): the per-pixel error is weighted by
    # 1 - heatmap; null: off
    dense: DenseConfig | None = None
    # forward: x_t = add_noise(x0, eps, t) (Diffusion-DPO); renoise: SmPO's ReNoise-inverted
    # latent and its implied noise (mmalign/diffusion/trajectory.py)
    trajectory: Literal["forward", "renoise"] = "forward"
    renoise: RenoiseConfig = field(default_factory=lambda: RenoiseConfig())
    # Flow-matching models (SD3 / SD3.5, FLUX; mmalign/diffusion/flow.py). process: auto
    # detects ddpm or flow from the pipeline's scheduler; a recipe that names one fails on the
    # other. The keys below apply to flow models only (None: the family's default).
    process: Literal["auto", "ddpm", "flow"] = "auto"
    sigma_sampling: Literal["logit_normal", "uniform", "mode"] | None = None  # logit_normal
    logit_mean: float | None = None  # 0.0 (SD3 paper)
    logit_std: float | None = None  # 1.0
    mode_scale: float | None = None  # 1.29 (diffusers' scripts)
    loss_weighting: Literal["none", "sigma_sqrt", "cosmap"] | None = None  # none
    sigma_shift: float | None = None  # the scheduler's training shift (SD3 3.0, FLUX 1)
    guidance: float | None = None  # FLUX.1-dev's embedded guidance; required for such a model
    drop_t5: bool = False  # SD3 without its T5 encoder (zeros in its place, as SD3 allows)
    # T5 tokens (SD3 256, FLUX-dev 512, FLUX-schnell 256; SD3 without T5: as many zeros as its
    # CLIP tokenizer length)
    max_sequence_length: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(
                f"diffusion.caption_dropout must be in [0, 1), got {self.caption_dropout}"
            )
        if self.vae_batch_size is not None and self.vae_batch_size < 1:
            raise ValueError(f"diffusion.vae_batch_size must be >= 1, got {self.vae_batch_size}")
        # SD3 paper (Esser et al. 2024, Sec. 3.1): f_mode maps [0, 1] onto itself monotonically
        # only for -1 <= s <= 2 / (pi - 2); beyond it the clamp piles sigma at the ends
        mode_max = 2 / (math.pi - 2)
        if self.mode_scale is not None and not -1.0 <= self.mode_scale <= mode_max:
            raise ValueError(
                f"diffusion.mode_scale must be in [-1, {mode_max:.4f}] (SD3 paper, Sec. 3.1), "
                f"got {self.mode_scale}"
            )
        if self.logit_std is not None and not self.logit_std > 0:
            raise ValueError(f"diffusion.logit_std must be > 0, got {self.logit_std}")
        # a setting of one sigma distribution given with another would be silently unused
        sampling = self.sigma_sampling or "logit_normal"
        belongs = {"logit_mean": "logit_normal", "logit_std": "logit_normal", "mode_scale": "mode"}
        for key, needs in belongs.items():
            if getattr(self, key) is not None and sampling != needs:
                raise ValueError(
                    f"diffusion.{key} applies to sigma_sampling: {needs}, but sigma_sampling is "
                    f"{sampling}; remove diffusion.{key} or set diffusion.sigma_sampling: {needs}"
                )
