"""The flow-matching pair scorer (SD3 / SD3.5, FLUX.1): encoded pairs -> `{"main": PairScores}`.

Rectified flow (Esser et al. 2024, "Scaling Rectified Flow Transformers", Eq. 1-3 and
section 3.1): `x_t = (1 - sigma) * x0 + sigma * eps` and the transformer predicts the velocity
`v = eps - x0`. Diffusion-DPO's pairing carries over unchanged (Wallace et al. 2024; METHODS.md
section 2, "Flow matching"): chosen and rejected share one `eps` and one `sigma` per pair and go
through the transformer in one forward over [chosen; rejected]; the per-pair error is the mean
squared error against `v` over every latent element, and the score is `-mse`, so every core
loss (dpo, mapo, kto, robust, soft labels, smpo) applies as it is.

Training sigmas (`FlowSettings.sampling`), as the SD3 paper's section 3.1 and diffusers'
`compute_density_for_timestep_sampling`: `logit_normal` (u = sigmoid(n), n ~ N(mean, std);
SD3's default mean 0, std 1), `uniform`, or `mode` (u -> 1 - u - s*(cos^2(pi*u/2) - 1 + u),
s = 1.29). u is then shifted as the model's scheduler shifts its training table,
sigma = shift*u / (1 + (shift - 1)*u) (SD3: 3.0; FLUX's dynamic shift: 1 at training), and
clamped to the shifted table's range [shift(1/T), 1] (SD3: [0.002994, 1]). Departure:
diffusers' scripts snap u to the 1000-level table; mmalign keeps u continuous. Optional SD3
loss weighting (paper Eq. 22 ff.): `sigma_sqrt` w = sigma^-2, `cosmap`
w = 2 / (pi * (1 - 2 sigma + 2 sigma^2)), multiplying both images' error of a pair alike.

FLUX: latents are packed 2x2 into tokens with their RoPE ids, the timestep is sigma itself and
FLUX.1-dev takes its guidance value as an input (`guidance`, required for such a model). SD3:
the timestep is sigma * T, the pooled CLIP projections condition the adaLN.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..adapters import AdapterSwitch
from ..losses import PairScores
from .flow_load import FlowModel
from .passes import policy_and_reference, seeded_dropout

SigmaSampling = Literal["logit_normal", "uniform", "mode"]
LossWeighting = Literal["none", "sigma_sqrt", "cosmap"]


@dataclass(frozen=True)
class FlowSettings:
    sampling: SigmaSampling = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    weighting: LossWeighting = "none"
    shift: float | None = None  # None: the scheduler's training shift
    guidance: float | None = None  # FLUX.1-dev's embedded guidance (3.5 in diffusers' scripts)

    def __post_init__(self) -> None:
        if self.sampling not in ("logit_normal", "uniform", "mode"):
            raise ValueError(
                f"diffusion.sigma_sampling must be logit_normal, uniform or mode, "
                f"got {self.sampling!r}"
            )
        if not self.logit_std > 0:
            raise ValueError(f"diffusion.logit_std must be > 0, got {self.logit_std}")
        if self.shift is not None and not self.shift > 0:
            raise ValueError(f"diffusion.sigma_shift must be > 0, got {self.shift}")


def training_shift(scheduler_config: Any) -> float:
    """The shift baked into the scheduler's training table: `shift`, or 1 when the shift is
    resolution-dependent (`use_dynamic_shifting`, FLUX), as the scheduler builds its table."""
    if scheduler_config.get("use_dynamic_shifting", False):
        return 1.0
    return float(scheduler_config.get("shift", 1.0))


def loss_weight(sigma: torch.Tensor, weighting: LossWeighting) -> torch.Tensor:
    """SD3's loss weighting per pair (diffusers' `compute_loss_weighting_for_sd3`)."""
    if weighting == "sigma_sqrt":
        return sigma.pow(-2.0)
    if weighting == "cosmap":
        return 2.0 / (math.pi * (1 - 2 * sigma + 2 * sigma.pow(2)))
    return torch.ones_like(sigma)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[N,C,H,W] -> FLUX tokens [N, H/2 * W/2, 4C] (each token a 2x2 patch, channels first)."""
    n, c, h, w = latents.shape
    x = latents.view(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (h // 2) * (w // 2), c * 4)


def image_ids(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """FLUX's RoPE ids of the packed tokens: (0, row, column) per 2x2 patch."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device, dtype)


class FlowPairScorer:
    """Same call as `DiffusionPairScorer`: `(model, batch, seeds, with_reference, base)`."""

    def __init__(
        self,
        model: FlowModel,
        empty: dict[str, torch.Tensor],
        *,
        reference: Literal["adapters", "copy", "none"],
        settings: FlowSettings | None = None,
        caption_dropout: float = 0.2,
        use_labels: bool = False,
        trajectory: Any = None,
    ):
        self.family = model.family
        self.trajectory = trajectory  # None: forward noising; FlowReNoiseTrajectory (SmPO)
        self.settings = settings or FlowSettings()
        if model.guidance_embeds and self.settings.guidance is None:
            raise ValueError(
                "diffusion.guidance: this FLUX transformer embeds a guidance value "
                "(guidance_embeds: true, as FLUX.1-dev); set it, e.g. diffusion.guidance=3.5 "
                "as diffusers' FLUX training scripts use"
            )
        config = model.pipe.scheduler.config
        self.num_timesteps = int(config.get("num_train_timesteps", 1000))
        self.shift = self.settings.shift or training_shift(config)
        # the table's lowest level, 1/T shifted as every level is (SD3: 0.002994, not 0.001)
        low = 1.0 / self.num_timesteps
        self.sigma_min = self.shift * low / (1 + (self.shift - 1) * low)
        self.empty = empty
        self.reference = reference
        self.caption_dropout = caption_dropout
        self.use_labels = use_labels
        # LoRA dropout's masks seeded from the step (a resume is exact): set by the recipes when
        # lora.dropout > 0; off, the policy pass forks no RNG state (no cost per step)
        self.seed_dropout = False
        self.guidance = self.settings.guidance if model.guidance_embeds else None
        self.reference_model: torch.nn.Module | None = None
        self._adapters = AdapterSwitch()
        if reference == "copy":
            self.reference_model = copy.deepcopy(model.transformer).requires_grad_(False).eval()

    # ----------------------------------------------------------------------- random draws

    def _u(self, gen: torch.Generator) -> torch.Tensor:
        s = self.settings
        if s.sampling == "logit_normal":
            return torch.sigmoid(torch.randn(1, generator=gen) * s.logit_std + s.logit_mean)
        u = torch.rand(1, generator=gen)
        if s.sampling == "mode":
            u = 1 - u - s.mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
        return u

    def draws(self, seeds: torch.Tensor, latent_shape: torch.Size):
        """Per pair: sigma, noise and whether its caption is dropped, from its own seed."""
        sigmas, noises, drops = [], [], []
        gen = torch.Generator()
        for seed in seeds.tolist():
            gen.manual_seed(int(seed))
            u = self._u(gen)
            sigma = self.shift * u / (1 + (self.shift - 1) * u)
            sigmas.append(sigma.clamp(self.sigma_min, 1.0))
            noises.append(torch.randn(latent_shape, generator=gen))
            drops.append(torch.rand(1, generator=gen) < self.caption_dropout)
        return torch.cat(sigmas), torch.stack(noises), torch.cat(drops)

    # ----------------------------------------------------------------------- the forward

    def _conditioning(self, batch: dict[str, torch.Tensor], drop: torch.Tensor):
        cond = {"prompt_embeds": batch["prompt_embeds"], "pooled": batch["pooled"]}
        if bool(drop.any()):
            mask = drop.to(cond["prompt_embeds"].device)
            for key, value in cond.items():
                empty = self.empty[key].to(value.device, value.dtype).expand_as(value)
                shape = (-1,) + (1,) * (value.dim() - 1)
                cond[key] = torch.where(mask.view(shape), empty, value)
        return cond

    def predict(self, net, noisy: torch.Tensor, sigma: torch.Tensor, cond) -> torch.Tensor:
        """The velocity for latents `noisy` [N,C,H,W] at `sigma` [N], unpacked for FLUX."""
        first = next(net.parameters())
        dtype = first.dtype
        embeds = cond["prompt_embeds"].to(dtype)
        pooled = cond["pooled"].to(dtype)
        if self.family == "sd3":
            # float32 timestep, as StableDiffusion3Pipeline and diffusers' SD3 scripts pass it
            # (the transformer embeds it in float32): in bfloat16, sigma * T is off by up to
            # ~4 of 1000 (901.3 -> 904), a level the noise in `noisy` was not drawn at.
            return net(
                hidden_states=noisy.to(dtype), encoder_hidden_states=embeds,
                pooled_projections=pooled, timestep=sigma.float() * self.num_timesteps,
            ).sample  # fmt: skip
        n, c, h, w = noisy.shape
        kwargs: dict[str, Any] = {}
        if self.guidance is not None:
            kwargs["guidance"] = torch.full((n,), self.guidance, device=noisy.device, dtype=dtype)
        out = net(
            hidden_states=pack(noisy).to(dtype), encoder_hidden_states=embeds,
            pooled_projections=pooled, timestep=sigma.to(dtype),
            img_ids=image_ids(h, w, noisy.device, dtype),
            txt_ids=torch.zeros(embeds.shape[1], 3, device=noisy.device, dtype=dtype),
            **kwargs,
        ).sample  # fmt: skip
        # tokens back to [N,C,H,W]: the inverse of `pack`
        out = out.view(n, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(n, c, h, w)

    def _velocity(self, net, cond):
        """`(z, sigma, rows) -> velocity` of rows of the stacked [chosen; rejected] batch."""
        cond2 = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in cond.items()}

        def velocity(z: torch.Tensor, sigma: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            sub = {k: v[rows.to(v.device)] for k, v in cond2.items()}
            return self.predict(net, z, sigma, sub).float()

        return velocity

    def _mse(self, net, noisy, sigma2, target, cond, weight) -> torch.Tensor:
        b = noisy.shape[0] // 2
        cond2 = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in cond.items()}
        pred = self.predict(net, noisy, sigma2, cond2)
        mse = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3)) * weight
        return mse.view(2, b)

    @contextlib.contextmanager
    def _reference(self, net) -> Iterator[torch.nn.Module]:
        if self.reference_model is not None:
            yield self.reference_model
            return
        with self._adapters.off(net):
            yield net

    def __call__(
        self,
        model: torch.nn.Module,
        batch: dict[str, torch.Tensor],
        seeds: torch.Tensor,
        *,
        with_reference: bool,
        base: torch.nn.Module | None = None,
    ) -> dict[str, PairScores]:
        latents = batch["latents"]  # [B, 2, C, h, w], float32
        device = latents.device
        sigma, noise, drop = self.draws(seeds, latents.shape[2:])
        sigma, noise = sigma.to(device), noise.to(device, latents.dtype)
        x0 = torch.cat([latents[:, 0], latents[:, 1]])
        noise2, sigma2 = noise.repeat(2, 1, 1, 1), sigma.repeat(2)
        s = sigma2.view(-1, 1, 1, 1).to(latents.dtype)
        noisy = (1 - s) * x0 + s * noise2
        cond = self._conditioning(batch, drop)
        if self.trajectory is not None:  # SmPO: the ReNoise-inverted latent at a grid level
            velocity = self._velocity(base if base is not None else model, cond)
            with seeded_dropout(seeds if self.seed_dropout else None, device):
                sigma, noisy, noise2 = self.trajectory(velocity, x0, sigma)
            sigma2 = sigma.repeat(2)
        target = noise2 - x0
        weight = loss_weight(sigma2, self.settings.weighting).to(device)
        if with_reference and self.reference == "none":
            raise ValueError("the objective needs a reference but the scorer has none")
        reference = self._reference(base if base is not None else model) if with_reference else None
        scores = policy_and_reference(
            lambda net: self._mse(net, noisy, sigma2, target, cond, weight),
            model,
            reference,
            seeds if self.seed_dropout else None,
        )
        if self.use_labels:
            scores.label = batch["label"].float().to(device)
        return {"main": scores}
