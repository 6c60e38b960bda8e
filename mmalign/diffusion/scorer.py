"""The diffusion pair scorer: a batch of encoded pairs -> `{"main": PairScores}`.

Diffusion-DPO's scoring (Wallace et al. 2024, METHODS.md section 2): chosen and rejected
share one timestep and one noise tensor per pair and go through the UNet in one forward over
the stacked batch [chosen; rejected]. The score is `-mse`, the denoising error against the
prediction type's target averaged over C,H,W. Caption dropout replaces both images' prompt
by the empty prompt. The reference is the same UNet with its LoRA adapters disabled, or a
frozen copy for a full fine-tune, run without gradients, and skipped when no objective term
needs it.

Every random draw of pair i comes from a generator seeded by `seeds[i]` (the loop derives it
from the run seed, the step and the pair's position in the global batch), so a resumed run and
a run split over several processes draw exactly the same noise.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any, Literal

import torch

from ..adapters import AdapterSwitch
from ..losses import PairScores
from .dense import weighted_mse
from .load import DiffusionModel
from .passes import policy_and_reference, seeded_dropout

ReferenceKind = Literal["adapters", "copy", "none"]
PREDICTION_TYPES = ("epsilon", "v_prediction")  # the targets `noise` and `get_velocity`


class DiffusionPairScorer:
    def __init__(
        self,
        model: DiffusionModel,
        empty: dict[str, torch.Tensor],
        *,
        reference: ReferenceKind,
        caption_dropout: float = 0.2,
        use_labels: bool = False,
        trajectory: Any = None,
        dense_max_timestep: int | None = None,
    ):
        from diffusers import DDPMScheduler

        self.family = model.family
        self.prediction_type = model.prediction_type
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unsupported prediction type {self.prediction_type!r}")
        self.noise_scheduler = DDPMScheduler.from_config(model.pipe.scheduler.config)
        self.num_timesteps = int(self.noise_scheduler.config.num_train_timesteps)
        self.empty = empty
        self.reference = reference
        self.caption_dropout = caption_dropout
        self.use_labels = use_labels
        # LoRA dropout's masks seeded from the step (a resume is exact): set by the recipes when
        # lora.dropout > 0; off, the policy pass forks no RNG state (no cost per step)
        self.seed_dropout = False
        self.trajectory = trajectory  # None: add_noise; a ReNoiseTrajectory (SmPO, trajectory.py)
        self.dense_max_timestep = dense_max_timestep  # diffusion.dense.max_timestep
        self.reference_unet: torch.nn.Module | None = None
        self._adapters = AdapterSwitch()  # LoRA: the reference is the UNet with these off
        if reference == "copy":  # full fine-tune: a frozen copy of the starting UNet
            self.reference_unet = copy.deepcopy(model.unet).requires_grad_(False).eval()

    def draws(self, seeds: torch.Tensor, latent_shape: torch.Size):
        """Per pair: timestep, noise and whether its caption is dropped, from its own seed."""
        ts, noises, drops = [], [], []
        gen = torch.Generator()  # one per batch, re-seeded per pair: the same draws
        for seed in seeds.tolist():
            gen.manual_seed(int(seed))
            ts.append(torch.randint(0, self.num_timesteps, (1,), generator=gen))
            noises.append(torch.randn(latent_shape, generator=gen))
            drops.append(torch.rand(1, generator=gen) < self.caption_dropout)
        return torch.cat(ts), torch.stack(noises), torch.cat(drops)

    def _conditioning(self, batch: dict[str, torch.Tensor], drop: torch.Tensor):
        cond = {"prompt_embeds": batch["prompt_embeds"]}
        if self.family == "sdxl":
            cond["pooled"] = batch["pooled"]
        if bool(drop.any()):
            mask = drop.to(cond["prompt_embeds"].device)
            for key, value in cond.items():
                empty = self.empty[key].to(value.device, value.dtype).expand_as(value)
                shape = (-1,) + (1,) * (value.dim() - 1)
                cond[key] = torch.where(mask.view(shape), empty, value)
        return cond

    def _added_cond(self, cond, time_ids) -> dict[str, Any]:
        """The UNet's `added_cond_kwargs` for the stacked [chosen; rejected] batch (SDXL's
        micro-conditioning; PPD's scorer adds the user embedding)."""
        if self.family != "sdxl":
            return {}
        return {
            "text_embeds": cond["pooled"].repeat(2, 1),
            "time_ids": torch.cat([time_ids[:, 0], time_ids[:, 1]]).to(cond["pooled"].dtype),
        }

    def _mse(self, unet, noisy, t, target, cond, time_ids, weight=None) -> torch.Tensor:
        b = noisy.shape[0] // 2
        kwargs = {}
        added = self._added_cond(cond, time_ids)
        if added:
            kwargs["added_cond_kwargs"] = added
        embeds = cond["prompt_embeds"]
        pred = unet(noisy, t.repeat(2), embeds.repeat(2, 1, 1), **kwargs).sample
        mse = weighted_mse(pred, target, weight)  # weight None: the plain C,H,W mean
        return mse.view(2, b)

    @contextlib.contextmanager
    def _reference(self, unet) -> Iterator[torch.nn.Module]:
        if self.reference_unet is not None:
            yield self.reference_unet
            return
        with self._adapters.off(unet):
            yield unet

    def __call__(
        self,
        unet: torch.nn.Module,
        batch: dict[str, torch.Tensor],
        seeds: torch.Tensor,
        *,
        with_reference: bool,
        base: torch.nn.Module | None = None,
    ) -> dict[str, PairScores]:
        """`unet`: the policy as trained (maybe DDP-wrapped); `base`: the same module
        unwrapped, used for the reference so no gradient hooks fire. Either may be a compiled
        view of it (`diffusion.compile`, compiled.py)."""
        latents = batch["latents"]  # [B, 2, C, h, w]
        device, dtype = latents.device, batch["prompt_embeds"].dtype
        t, noise, drop = self.draws(seeds, latents.shape[2:])
        t, noise = t.to(device), noise.to(device, latents.dtype)
        x0 = torch.cat([latents[:, 0], latents[:, 1]])
        noise2, t2 = noise.repeat(2, 1, 1, 1), t.repeat(2)
        noisy = self.noise_scheduler.add_noise(x0, noise2, t2)
        if self.trajectory is not None:  # SmPO: the inverted latent at the grid-snapped level
            policy = base if base is not None else unet
            cond_t = self._conditioning(batch, drop)
            with seeded_dropout(seeds if self.seed_dropout else None, device):
                t, noisy, noise2 = self.trajectory(policy, x0, t, cond_t, batch.get("time_ids"))
            t2 = t.repeat(2)
        if self.prediction_type == "epsilon":
            target = noise2
        else:
            target = self.noise_scheduler.get_velocity(x0, noise2, t2)
        cond = self._conditioning(batch, drop)
        noisy = noisy.to(dtype)
        time_ids = batch.get("time_ids")
        weight = batch.get("dense_weight")  # [B,2,1,h,w]: ImageDoctor's 1 - H (dense.py)
        if weight is not None:
            weight = torch.cat([weight[:, 0], weight[:, 1]])
            if self.dense_max_timestep is not None:  # noisier pairs keep the plain error
                low = (t2 < self.dense_max_timestep).view(-1, 1, 1, 1)
                weight = torch.where(low, weight, 1.0)
        if with_reference and self.reference == "none":
            raise ValueError("the objective needs a reference but the scorer has none")
        reference = self._reference(base if base is not None else unet) if with_reference else None
        scores = policy_and_reference(
            lambda net: self._mse(net, noisy, t, target, cond, time_ids, weight),
            unet,
            reference,
            seeds if self.seed_dropout else None,
        )
        if self.use_labels:
            scores.label = batch["label"].float().to(device)
        return {"main": scores}
