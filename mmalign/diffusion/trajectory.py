"""Where a training pair's noisy latents come from: `diffusion.trajectory: forward | renoise`.

`forward` (Diffusion-DPO, the default) is the scorer's own `add_noise(x0, eps, t)`.
`renoise` is SmPO-Diffusion's (Lu et al. ICML 2025, Sec. 4.2 and Algorithm 1): each image is
inverted from its x0 to the pair's timestep with DDIM inversion plus ReNoise iterations
(Garibi et al. 2024) under the current policy, without gradients, conditional on the pair's
prompt (the one it trains with, so a dropped caption inverts unconditionally) and without
classifier-free guidance. The scorer then trains on the inverted latent z and its implied
noise `tau = (z - sqrt(abar_t) x0) / sqrt(1 - abar_t)` as target (v-prediction: the velocity
of x0 and tau), the same for the policy and the reference.

Departures from the released SmPO code, and why:
- The timestep is snapped to the inversion grid, and the UNet, the target and the reference
  all use the snapped level. The released code inverts over the grid levels below t, so z
  sits at a grid level, but feeds it to the UNet at t and computes the implied noise with
  abar_t: latent and level disagree. The snap takes the grid step whose equal share of
  [0, T) holds t (`snap_to_grid`): every level is trained equally often, as every t is in
  the released code; on a leading grid (SD1.5, SDXL) that is the largest level <= t, on a
  trailing one (toy-sd) the smallest level >= t, so the top level (the highest noise) is
  trained too.
- Any batch size: rows of a batch stop at their own level (the released code takes the first
  pair's timestep for the whole batch and assumes batch 1), chosen and rejected invert in one
  batched pass, and a row's result does not depend on the other rows (`invert_to_levels`).
- The inversion runs on the unwrapped policy, so under accelerate/DDP no gradient hooks fire.
The pair's timestep still comes from its own seed (the scorer's `draws`), so resuming and
multi-process runs stay exact; the inversion itself draws nothing.
"""

from __future__ import annotations

from typing import Any

import torch

from .renoise import (
    ModelFn,
    ReNoiseSettings,
    inverse_scheduler,
    invert_to_levels,
    snap_to_grid,
    to_epsilon,
)

TRAJECTORIES = ("forward", "renoise")


class ReNoiseTrajectory:
    """`(unet, x0 [2B,...], t [B], cond, time_ids) -> (t_snapped [B], z [2B,...], tau [2B,...])`
    for a batch stacked [chosen; rejected]; `cond` holds the B pairs' (dropped-out) prompt
    embeddings as the scorer conditions on them."""

    def __init__(
        self, scheduler_config: Any, family: str, settings: ReNoiseSettings, prediction_type: str
    ):
        self.family = family
        self.prediction_type = prediction_type
        self.settings = settings
        self.steps = settings.resolved_steps(family)
        self.inv = inverse_scheduler(scheduler_config, self.steps)
        self.grid = self.inv.timesteps.to(torch.long)
        self.alphas_cumprod = self.inv.alphas_cumprod.to(torch.float64)
        self.forwards = 0  # UNet calls made, for tests and benchmarks
        self.rows = 0  # latents those calls ran on (a call may run on only some rows)

    def snap(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(grid index, snapped timestep) of each pair's timestep."""
        index = snap_to_grid(t.cpu(), self.grid, int(self.inv.config.num_train_timesteps))
        return index, self.grid[index].to(t.device)

    def _model(self, unet: torch.nn.Module, cond: dict[str, torch.Tensor], time_ids) -> ModelFn:
        embeds = cond["prompt_embeds"].repeat(2, 1, 1)
        pooled = cond["pooled"].repeat(2, 1) if self.family == "sdxl" else None
        ids = torch.cat([time_ids[:, 0], time_ids[:, 1]]) if pooled is not None else None

        def call(z: torch.Tensor, g: int, rows: torch.Tensor) -> torch.Tensor:
            self.forwards += 1
            self.rows += len(z)
            sub = rows.to(embeds.device)
            kwargs = {}
            if pooled is not None:
                assert ids is not None
                kwargs["added_cond_kwargs"] = {
                    "text_embeds": pooled[sub],
                    "time_ids": ids[sub].to(z.device, pooled.dtype),
                }
            t = torch.full((len(z),), g, device=z.device, dtype=torch.long)
            out = unet(z.to(embeds.dtype), t, embeds[sub], **kwargs).sample.to(z.dtype)
            return to_epsilon(out, z, g, self.inv.alphas_cumprod, self.prediction_type)

        return call

    @torch.no_grad()
    def __call__(
        self,
        unet: torch.nn.Module,
        x0: torch.Tensor,
        t: torch.Tensor,
        cond: dict[str, torch.Tensor],
        time_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index, snapped = self.snap(t)
        z = invert_to_levels(
            self._model(unet, cond, time_ids), x0.float(), index.repeat(2), self.inv, self.settings
        )
        abar = self.alphas_cumprod[snapped.cpu().repeat(2)].to(x0.device)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        a, s = abar.sqrt().view(shape), (1 - abar).sqrt().view(shape)
        tau = ((z.double() - a * x0.double()) / s).to(x0.dtype)
        return snapped, z.to(x0.dtype), tau


def renoise_settings(options: dict[str, Any] | None) -> ReNoiseSettings:
    """`diffusion.renoise: {steps, iterations, average}` as checked settings."""
    options = dict(options or {})
    unknown = sorted(set(options) - {"steps", "iterations", "average"})
    if unknown:
        raise ValueError(
            f"diffusion.renoise: unknown key(s) {', '.join(unknown)}; "
            "use steps, iterations, average"
        )
    if options.get("average") is not None:
        options["average"] = tuple(options["average"])
    try:
        return ReNoiseSettings(**options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"diffusion.{err}") from None


def make_trajectory(
    kind: str, renoise: dict[str, Any] | None, scheduler_config: Any, family: str
) -> ReNoiseTrajectory | None:
    """None for `forward` (the scorer's add_noise), a `ReNoiseTrajectory` for `renoise`."""
    if kind not in TRAJECTORIES:
        raise ValueError(f"diffusion.trajectory must be one of {', '.join(TRAJECTORIES)}: {kind!r}")
    if kind == "forward":
        return None
    prediction_type = str(scheduler_config.get("prediction_type", "epsilon"))
    return ReNoiseTrajectory(scheduler_config, family, renoise_settings(renoise), prediction_type)
