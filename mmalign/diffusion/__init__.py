"""Diffusion models: loading SD1.5/SDXL pipelines, LoRA, the pair scorer, the training recipe.

`load_pipeline` and `load_tuned` load models; `DiffusionPairScorer` turns encoded pairs into
`PairScores`; `DiffusionRecipe` is what `mmalign train` runs for `model.kind: diffusion`.
"""

from .load import DiffusionModel, load_pipeline, tiny_sd_pipeline, tiny_sdxl_pipeline
from .scorer import DiffusionPairScorer
from .tuned import apply_lora, load_tuned

__all__ = [
    "DiffusionModel",
    "DiffusionPairScorer",
    "apply_lora",
    "load_pipeline",
    "load_tuned",
    "tiny_sd_pipeline",
    "tiny_sdxl_pipeline",
]
