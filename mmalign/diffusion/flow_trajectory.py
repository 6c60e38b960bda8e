"""SmPO's ReNoise trajectory for flow-matching models (`diffusion.trajectory: renoise`).

SmPO-Diffusion (Lu et al. ICML 2025, Sec. 4.2) trains on latents inverted from the images
instead of the forward noising. For a flow model the sampler is Euler on the velocity field,
`x_a = x_b + (a - b) * v(x_b, b)` from level b down to a < b, so its exact inverse is the
fixed point `x_b = x_a + (b - a) * v(x_b, b)`. One inversion step from a to b therefore takes
the plain Euler estimate `e_0 = v(x_a, a)` and ReNoise iterations (Garibi et al. 2024)
`x_i = x_a + (b - a) * e_{i-1}`, `e_i = v(x_i, b)`, and steps with the mean of the estimates
`[lo, hi)` (`diffusion.renoise`: the same `steps`, `iterations`, `average` as for DDPM models;
the default average [0, 2) is the trapezoid of the Euler and one ReNoise estimate, SmPO's
released setting for DDIM). The grid is the scorer's own sigma map of `steps` equal steps in u,
`sigma_j = shift * u_j / (1 + (shift - 1) * u_j)`, u_j = j / steps; each pair's sigma is
snapped to the level whose equal share of u holds it (u in [(j-1)/steps, j/steps) -> level j;
the DDPM trajectory's rule on its trailing grid), so latent and level agree and every level,
the top one included, trains on an equal share of the draws. The scorer then trains on the
inverted latent `z` and its implied noise `eps = (z - (1 - sigma) x0) / sigma` (target
`v = eps - x0`), for the policy and the reference alike. The inversion runs without gradients
on the unwrapped policy, conditioned as it trains (a dropped caption inverts unconditionally),
without CFG; it draws nothing, so resumed and multi-process runs stay exact.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .renoise import ReNoiseSettings

FLOW_RENOISE_STEPS = 10  # default inversion steps over [0, 1] (SmPO's SDXL count)

VelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class FlowReNoiseTrajectory:
    """`(velocity(z, sigma, rows), x0 [2B,...], sigma [B]) -> (sigma_snapped [B], z, eps)`
    for a batch stacked [chosen; rejected]."""

    def __init__(self, settings: ReNoiseSettings, shift: float, num_timesteps: int = 1000):
        self.settings = settings
        self.shift = shift
        self.steps = settings.steps or FLOW_RENOISE_STEPS
        u = torch.arange(1, self.steps + 1, dtype=torch.float64) / self.steps
        self.grid = (shift * u / (1 + (shift - 1) * u)).clamp(min=1.0 / num_timesteps)
        self.forwards = 0  # transformer calls made, for tests and benchmarks

    def snap(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(grid index, snapped sigma) of each pair's sigma: the level whose share of u
        (the unshifted draw, `u = sigma / (shift - (shift - 1) * sigma)`) holds it."""
        s = sigma.double().cpu()
        u = s / (self.shift - (self.shift - 1) * s)
        index = (u * self.steps).floor().long().clamp(0, self.steps - 1)
        return index, self.grid[index].to(sigma.device, sigma.dtype)

    def _estimates(self, velocity: VelocityFn, z: torch.Tensor, a: float, b: float, rows):
        s = self.settings
        n = len(z)
        e = velocity(z, torch.full((n,), a, device=z.device), rows)
        estimates = [e]
        for _ in range(s.iterations):
            z_i = z + (b - a) * estimates[-1]
            estimates.append(velocity(z_i, torch.full((n,), b, device=z.device), rows))
        self.forwards += len(estimates)
        lo, hi = s.average if s.average is not None else (len(estimates) - 1, len(estimates))
        return torch.stack(estimates[lo:hi]).mean(0)

    @torch.no_grad()
    def invert(self, velocity: VelocityFn, x0: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """x0 [N,...] carried up the grid to level `index[i]` for row i (rows stop early)."""
        z = x0.clone()
        levels = [0.0, *self.grid.tolist()]
        for j in range(int(index.max()) + 1):
            rows = torch.nonzero(index >= j).flatten()
            a, b = levels[j], levels[j + 1]
            step = self._estimates(velocity, z[rows], a, b, rows.to(z.device))
            z[rows] = z[rows] + (b - a) * step
        return z

    @torch.no_grad()
    def __call__(self, velocity: VelocityFn, x0: torch.Tensor, sigma: torch.Tensor):
        index, snapped = self.snap(sigma)
        z = self.invert(velocity, x0.float(), index.repeat(2))
        s = snapped.repeat(2).view(-1, *([1] * (x0.dim() - 1))).to(z.dtype)
        eps = (z - (1 - s) * x0.float()) / s
        return snapped, z.to(x0.dtype), eps.to(x0.dtype)

    @torch.no_grad()
    def sample_back(self, velocity: VelocityFn, z: torch.Tensor, index: int) -> torch.Tensor:
        """The Euler sampler from grid level `index` down to 0 (the test of the inversion)."""
        levels = [0.0, *self.grid.tolist()]
        rows = torch.arange(len(z), device=z.device)
        for j in range(index + 1, 0, -1):
            b, a = levels[j], levels[j - 1]
            z = z + (a - b) * velocity(z, torch.full((len(z),), b, device=z.device), rows)
        return z
