"""`LOSSES`: every registered loss by name, with the paper each one comes from.

Kept apart from `__init__` so that `objective` can import the registry directly instead of
reaching back into its own package.
"""

from .diffusion import diffusion_kto, mapo, smpo
from .pairwise import bco_pair, cpo, dpo, dpop, hinge, ipo, nca_pair, orpo, robust, sft, simpo
from .registry import Loss
from .unpaired import kto

LOSSES: dict[str, Loss] = {
    loss.name: loss
    for loss in [
        Loss(dpo, "Rafailov et al. 2023 (DPO), Eq. 7; cDPO soft labels", uses_label=True),
        Loss(robust, "Chowdhury et al. 2024 (Provably Robust DPO)"),
        Loss(hinge, "Zhao et al. 2023 (SLiC-HF)"),
        Loss(ipo, "Azar et al. 2023 (IPO), Eq. 17"),
        Loss(nca_pair, "Chen et al. 2024 (Noise Contrastive Alignment)"),
        Loss(bco_pair, "Jung et al. 2024 (Binary Classifier Optimization)"),
        Loss(kto, "Ethayarajh et al. 2024 (KTO)"),
        Loss(simpo, "Meng et al. 2024 (SimPO), Eq. 6", reference_free=True),
        Loss(cpo, "Xu et al. 2024 (CPO)", reference_free=True),
        Loss(orpo, "Hong et al. 2024 (ORPO)", reference_free=True),
        Loss(sft, "Liu et al. 2024 (RPO): SFT term", reference_free=True),
        Loss(dpop, "Pal et al. 2024 (Smaug, DPO-Positive)"),
        Loss(mapo, "Hong, Paul et al. 2024 (MaPO)", reference_free=True),
        Loss(smpo, "Lu et al. 2025 (SmPO-Diffusion)", uses_label=True),
        Loss(diffusion_kto, "Li et al. 2024 (Diffusion-KTO)"),
    ]
}
