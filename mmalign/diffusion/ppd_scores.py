"""PPD's pair scores (Dang et al. CVPR 2025): Diffusion-DPO scores with the denoiser conditioned
on each pair's user, and the reference the same denoiser with the user branch off.

score = -mse as in Diffusion-DPO (Wallace et al. CVPR 2024): one timestep and one noise per
pair, shared by chosen and rejected; the policy sees the pair's user embedding (zeroed with
probability `user_drop`); the reference is `ppd.user_branch_off`, i.e. exactly the base UNet,
so any core loss (`dpo`, `mapo`, ...) applies to the returned `PairScores`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..losses.scores import PairScores
from . import ppd
from .passes import policy_and_reference


def ppd_pair_scores(
    unet: Any,
    scheduler: Any,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    text: torch.Tensor,
    user: torch.Tensor,
    *,
    generator: torch.Generator,
    user_drop: float = 0.0,
    extra: dict[str, torch.Tensor] | None = None,
) -> PairScores:
    """Scores for latents `chosen`, `rejected` [B,C,h,w] under text [B,L,C'] and user [B,D]
    (`extra`: SDXL's `text_embeds`/`time_ids`); epsilon- or v-prediction per the scheduler."""
    b = chosen.shape[0]
    user = ppd.drop_users(ppd.check_embedding(unet, user), user_drop, generator)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator)
    noise = torch.randn(chosen.shape, generator=generator).repeat(2, 1, 1, 1)
    x0, t2 = torch.cat([chosen, rejected]), t.repeat(2)
    noisy = scheduler.add_noise(x0, noise, t2)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(x0, noise, t2)
    else:
        target = noise
    kwargs = {k: v.repeat(2, *[1] * (v.dim() - 1)) for k, v in (extra or {}).items()}
    kwargs.update(ppd.user_kwargs(unet, user.repeat(2, 1)))

    def mse(model: Any) -> torch.Tensor:
        pred = model(noisy, t2, text.repeat(2, 1, 1), added_cond_kwargs=kwargs).sample
        return (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3)).view(2, b)

    return policy_and_reference(mse, unet, ppd.user_branch_off(unet))
