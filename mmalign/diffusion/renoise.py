"""ReNoise inversion (Garibi et al. 2024, "ReNoise: Real Image Inversion Through Iterative
Noising"): DDIM inversion where each step's noise estimate is refined by re-noising.

Plain DDIM inversion takes z_t to the next grid level g with `inv_step(eps(z_t, g), g, z_t)`,
approximating the noise at the unknown z_{t+1} by the noise at z_t. ReNoise (the paper's
Algorithm 1) iterates that step K times, always re-inverting from z_t with the estimate made
at the last approximation of z_{t+1}, and steps with the mean of the estimates whose index
lies in an averaging range (the paper's Eq. 6; index 0 is the plain DDIM estimate). SmPO-
Diffusion (Lu et al. ICML 2025, Eq. 12 and its Algorithm 1) uses K = 1 and averages both
estimates: `z <- inv_step((eps(z, g) + eps(inv_step(eps(z, g), g, z), g)) / 2, g, z)`.

The step is diffusers' `DDIMInverseScheduler.step` with `clip_sample` off (latents are not in
[-1, 1], and SDXL's Euler config would otherwise switch clipping on by default), always in the
epsilon parameterisation: a v-prediction output is turned into noise with the latent and the
level the UNet was given (`to_epsilon`). diffusers' inverse step would convert it with the
lower level's latent instead, and then the ReNoise fixed point is not the latent that DDIM
sampling maps back to z_t. Not here: the paper's noise regularisation, the noise correction
for stochastic samplers, and its separate iteration count and averaging range for the first,
low-noise steps (t < 250 in the authors' code): every step uses the same K and range.

`invert_to_levels` inverts a batch whose rows stop at different grid levels, running the
UNet only on the rows still climbing; `invert` is the standalone tool over images and prompts
and `reconstruct` samples back down the same grid with deterministic DDIM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

# The UNet's noise output for rows `rows` of the batch at latents `z` and grid timestep `g`.
ModelFn = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]
FAMILY_STEPS = {"sd": 5, "sdxl": 10}  # SmPO's released training: inversion steps per family


@dataclass(frozen=True)
class ReNoiseSettings:
    """`steps`: inversion steps over the whole schedule (None: 5 for SD1.5 and toy-sd, 10 for
    SDXL, SmPO's released settings); `iterations`: ReNoise iterations per step (0 is plain DDIM
    inversion); `average`: the estimates [lo, hi) averaged for the final step (index 0 is the
    DDIM estimate; None steps with the last estimate)."""

    steps: int | None = None
    iterations: int = 1
    average: tuple[int, int] | None = (0, 2)

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"renoise.steps must be >= 1, got {self.steps}")
        if self.iterations < 0:
            raise ValueError(f"renoise.iterations must be >= 0, got {self.iterations}")
        if self.average is not None:
            if len(self.average) != 2:
                raise ValueError(f"renoise.average must be [lo, hi], got {list(self.average)}")
            lo, hi = (int(x) for x in self.average)
            if not 0 <= lo < hi <= self.iterations + 1:
                raise ValueError(
                    f"renoise.average [{lo}, {hi}) must lie within the {self.iterations + 1} "
                    f"estimates of a step (0 <= lo < hi <= iterations + 1)"
                )
            object.__setattr__(self, "average", (lo, hi))

    def resolved_steps(self, family: str) -> int:
        return self.steps if self.steps is not None else FAMILY_STEPS.get(family, 5)

    @property
    def forwards_per_step(self) -> int:
        return self.iterations + 1


def inverse_scheduler(scheduler_config: Any, steps: int, *, native: bool = False):
    """diffusers' `DDIMInverseScheduler` on a pipeline's noise schedule with `steps` steps.

    Spacings other than leading/trailing (e.g. linspace) become leading, the only other one the
    inverse scheduler has. A step count beyond the training schedule is an error, not a clamp,
    and so is a grid whose top level has alpha_bar = 0 (zero terminal SNR with trailing
    spacing): there the epsilon step is the identity (the latent "at T - 1" stays the one a level
    below) and DDIM sampling back divides by sqrt(alpha_bar) = 0.
    """
    from diffusers import DDIMInverseScheduler

    total = int(scheduler_config.get("num_train_timesteps", 1000))
    if not 1 <= steps <= total:
        raise ValueError(
            f"renoise/inversion steps must be in 1..{total} (the schedule's "
            f"num_train_timesteps), got {steps}"
        )
    spacing = scheduler_config.get("timestep_spacing", "leading")
    inv = DDIMInverseScheduler.from_config(
        scheduler_config,
        clip_sample=False,
        # model functions return noise (to_epsilon); native: the model's own parameterisation
        prediction_type=scheduler_config.get("prediction_type", "epsilon") if native else "epsilon",
        timestep_spacing=spacing if spacing in ("leading", "trailing") else "leading",
    )
    inv.set_timesteps(steps)
    top = int(inv.timesteps[-1])
    if not float(inv.alphas_cumprod[top]) > 0:
        raise ValueError(
            f"the noise schedule has zero terminal SNR (alpha_bar = 0 at timestep {top}, "
            "rescale_betas_zero_snr), the top of this inversion grid: DDIM/ReNoise inversion "
            "to it is degenerate (the inverted latent keeps the image), so it is refused; a "
            "grid with timestep_spacing 'leading' in the scheduler config stops below it"
        )
    return inv


def to_epsilon(
    out: torch.Tensor, z: torch.Tensor, g: int, alphas_cumprod: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """The noise a UNet output means for latent z given at timestep g."""
    if prediction_type == "epsilon":
        return out
    if prediction_type == "v_prediction":
        a = float(alphas_cumprod[g])
        return a**0.5 * out + (1 - a) ** 0.5 * z
    raise ValueError(f"inversion supports epsilon and v_prediction models, not {prediction_type}")


def renoise_step(
    model: ModelFn,
    inv: Any,
    z: torch.Tensor,
    g: int,
    rows: torch.Tensor,
    settings: ReNoiseSettings,
) -> torch.Tensor:
    """One inversion step of rows `rows`: z at the level below g -> z at grid level g.

    Estimate i is the UNet at the i-th approximation of z_g (i = 0: at z itself, plain DDIM);
    every approximation steps from z, never from the previous approximation (Algorithm 1).
    """
    approx = z
    total: torch.Tensor | None = None
    lo, hi = settings.average if settings.average is not None else (0, 0)
    for i in range(settings.forwards_per_step):
        eps = model(approx, g, rows)
        if lo <= i < hi:
            total = eps if total is None else total + eps
        approx = inv.step(eps, g, z).prev_sample
    if total is not None:
        approx = inv.step(total / (hi - lo), g, z).prev_sample
    return approx


def invert_to_levels(
    model: ModelFn,
    x0: torch.Tensor,
    index: torch.Tensor,
    inv: Any,
    settings: ReNoiseSettings,
    *,
    progress: bool = False,
) -> torch.Tensor:
    """Invert every row of x0 [N,...] up to grid level `inv.timesteps[index[i]]` (inclusive).

    Rows climb together; at grid step k the UNet runs only on the rows with `index >= k`, so a
    batch costs sum over rows of (index + 1) * (iterations + 1) row-forwards, the same as
    inverting each row alone, and a row's result does not depend on the others in the batch.
    """
    grid = [int(g) for g in inv.timesteps]
    index = index.to(torch.long).cpu()
    if len(index) != len(x0):
        raise ValueError(f"{len(index)} target levels for {len(x0)} latents")
    if len(index) and (int(index.min()) < 0 or int(index.max()) >= len(grid)):
        raise ValueError(f"target grid indices must be in 0..{len(grid) - 1}")
    z = x0.clone()
    top = int(index.max()) + 1 if len(index) else 0
    for k in tqdm(range(top), desc="inverting", unit="step", disable=not progress):
        rows = (index >= k).nonzero().squeeze(1)
        if len(rows) == len(z):
            z = renoise_step(model, inv, z, grid[k], rows, settings)
        else:
            sub = rows.to(z.device)
            z[sub] = renoise_step(model, inv, z[sub], grid[k], rows, settings)
    return z


def snap_to_grid(t: torch.Tensor, grid: torch.Tensor, total: int) -> torch.Tensor:
    """The grid index of each timestep t in [0, total): the grid step whose equal share of
    [0, total) holds t, `floor(t * n / total)` for an n-level grid, so the inverted latent sits
    exactly at the level the UNet is told and every level gets the same share of uniform t.

    With leading spacing (SD1.5, SDXL: levels k*total/n + offset) this is the largest level
    <= t (up to the offset); with trailing spacing (toy-sd: levels (k+1)*total/n - 1) it is the
    smallest level >= t. Taking the largest level <= t on a trailing grid would give the lowest
    level two shares, the top level almost none, and never train at the highest noise."""
    n = len(grid)
    index = torch.div(t.to(torch.long) * n, total, rounding_mode="floor")
    return index.clamp(0, n - 1).to(t.device)


# ------------------------------------------------------------------ the standalone tool


@dataclass
class Inversion:
    """`noise`: the inverted latents at the top grid level; `latents`: the images' x0;
    `level`: that top timestep; `forwards`: UNet calls made (each over the whole batch)."""

    noise: torch.Tensor
    latents: torch.Tensor
    level: int
    forwards: int
    conditioning: dict[str, torch.Tensor]


def _conditioning(model: Any, prompts: Sequence[str], resolution: int) -> dict[str, torch.Tensor]:
    from .encode import Encoder

    cond = Encoder(model).text(list(prompts))
    if model.family == "sdxl":  # original size, crop (0, 0), target size: a centre-cropped square
        # beside the embeddings: `_model_fn` indexes both with rows on their device (a CPU
        # tensor indexed with CUDA rows is an error)
        device = cond["prompt_embeds"].device
        ids = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], device=device)
        cond["time_ids"] = ids.float().expand(len(prompts), 6).clone()
    return cond


def _model_fn(model: Any, cond: dict[str, torch.Tensor], *, native: bool = False) -> ModelFn:
    unet = model.pipe.unet
    kind = "epsilon" if native else model.prediction_type  # native: the raw output
    alphas = model.pipe.scheduler.alphas_cumprod

    def call(z: torch.Tensor, g: int, rows: torch.Tensor) -> torch.Tensor:
        sub = rows.to(cond["prompt_embeds"].device)
        kwargs = {}
        if "pooled" in cond:
            kwargs["added_cond_kwargs"] = {
                "text_embeds": cond["pooled"][sub],
                "time_ids": cond["time_ids"][sub].to(z.device, cond["pooled"].dtype),
            }
        t = torch.full((len(z),), g, device=z.device, dtype=torch.long)
        embeds = cond["prompt_embeds"][sub]
        out = unet(z.to(embeds.dtype), t, embeds, **kwargs).sample.to(z.dtype)
        return to_epsilon(out, z, g, alphas, kind)

    return call


def flow_refused(model: str, who: str) -> str:
    """Why `who` (this module's functions, `mmalign invert`) does not take flow model `model`.
    Said before as "mmalign trains StableDiffusionPipeline and StableDiffusionXLPipeline
    models; this one is a FlowModel", which reads as if mmalign trained no flow model."""
    return (
        f"{who}: {model} is a flow-matching (SD3 / FLUX) pipeline; `{who}` is DDIM and ReNoise "
        "inversion of SD1.5 / SDXL (UNet) models. SmPO on a flow model inverts its images "
        "during training (diffusion.trajectory: renoise)"
    )


def _as_model(pipe: Any, who: str) -> Any:
    """`pipe` (a DiffusionModel or an SD1.5 / SDXL pipeline) as a DiffusionModel; a flow model
    (a FlowModel, or a pipeline with a flow-matching scheduler) is refused naming `who`."""
    from .flow_load import FlowModel, is_flow_scheduler
    from .load import DiffusionModel, _family

    if isinstance(pipe, DiffusionModel):
        return pipe
    if isinstance(pipe, FlowModel) or is_flow_scheduler(getattr(pipe, "scheduler", None)):
        source = f" ({pipe.source})" if isinstance(pipe, FlowModel) else ""
        raise ValueError(flow_refused(f"this {type(pipe).__name__}{source}", who))
    return DiffusionModel(pipe, _family(pipe), "")


@torch.no_grad()
def encode_images(pipe: Any, images: Sequence[Any], resolution: int | None = None) -> torch.Tensor:
    """The denoiser's latents of the VAE posterior means of PIL images, centre-cropped to
    `resolution`: scaled, and for an SDXL VAE with `latents_mean` / `latents_std` normalised
    by them, as training's (`encode.to_model_latents`)."""
    from .data import crop_and_resize
    from .encode import to_model_latents

    model = _as_model(pipe, "renoise.encode_images")
    res = resolution or model.default_resolution
    pixels = torch.stack([crop_and_resize(img, res)[0] for img in images])
    vae = model.pipe.vae
    first = next(vae.parameters())
    mean = vae.encode(pixels.to(first.device, first.dtype)).latent_dist.mean
    return to_model_latents(model, mean.float())


@torch.no_grad()
def invert(
    pipe: Any,
    images: Sequence[Any],
    prompts: Sequence[str],
    steps: int = 10,
    iterations: int = 9,
    average_range: tuple[int, int] | None = (8, 10),
    *,
    resolution: int | None = None,
    progress: bool = False,
    diffusers_ddim: bool = False,
) -> Inversion:
    """Invert PIL images to the top of a `steps`-step DDIM grid with ReNoise, conditional on
    their prompts, without classifier-free guidance. `iterations=0` is plain DDIM inversion;
    `diffusers_ddim` (with iterations=0) is exactly diffusers' DDIMInverseScheduler, which
    converts a v-prediction with the lower level's latent (the usual baseline; for epsilon
    models the two are the same).

    Defaults: 10 steps, K = 9 iterations, the last two estimates averaged (the ReNoise paper's
    K and averaging range for SDXL-Turbo). `pipe`: a diffusers SD1.5/SDXL pipeline or a
    `DiffusionModel`. Returns the inverted noise
    and the images' latents; `reconstruct` samples the noise back.
    """
    if len(images) != len(prompts) or not images:
        raise ValueError(f"invert needs one prompt per image, got {len(images)} / {len(prompts)}")
    model = _as_model(pipe, "renoise.invert")
    if iterations == 0:
        average_range = None  # one estimate per step: nothing to average
    settings = ReNoiseSettings(steps, iterations, average_range)
    if diffusers_ddim and iterations:
        raise ValueError("diffusers_ddim is plain DDIM inversion: iterations must be 0")
    inv = inverse_scheduler(model.pipe.scheduler.config, steps, native=diffusers_ddim)
    res = resolution or model.default_resolution
    x0 = encode_images(model, images, res)
    cond = _conditioning(model, prompts, res)
    base = _model_fn(model, cond, native=diffusers_ddim)
    calls = 0

    def counted(z: torch.Tensor, g: int, rows: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return base(z, g, rows)

    index = torch.full((len(x0),), steps - 1, dtype=torch.long)
    noise = invert_to_levels(counted, x0, index, inv, settings, progress=progress)
    return Inversion(noise, x0, int(inv.timesteps[-1]), calls, cond)


@torch.no_grad()
def reconstruct(pipe: Any, inversion: Inversion, steps: int) -> torch.Tensor:
    """Deterministic DDIM (eta 0, no guidance) from the inverted noise down the same grid."""
    from diffusers import DDIMScheduler

    model = _as_model(pipe, "renoise.reconstruct")
    config = model.pipe.scheduler.config
    spacing = config.get("timestep_spacing", "leading")
    ddim = DDIMScheduler.from_config(
        config,
        clip_sample=False,
        prediction_type="epsilon",  # the model function returns noise (to_epsilon)
        timestep_spacing=spacing if spacing in ("leading", "trailing") else "leading",
    )
    ddim.set_timesteps(steps)
    fn = _model_fn(model, inversion.conditioning)
    z = inversion.noise.clone()
    rows = torch.arange(len(z))
    for t in ddim.timesteps:
        z = ddim.step(fn(z, int(t), rows), int(t), z).prev_sample
    return z


@torch.no_grad()
def decode(pipe: Any, latents: torch.Tensor) -> torch.Tensor:
    """Pixels [N,3,H,W] in [0,1] of the denoiser's latents (`encode.decode_latents`: the
    inverse of `encode_images`)."""
    from .encode import decode_latents

    return decode_latents(_as_model(pipe, "renoise.decode"), latents)
