"""`toy-sd`: a tiny Stable-Diffusion-architecture pipeline trained on the shapes world.

Same classes as SD1.5 (`UNet2DConditionModel`, `AutoencoderKL`, `CLIPTextModel`,
`CLIPTokenizer`; a DDPM-trained v-prediction UNet like SD2's 768 models), so
`StableDiffusionPipeline.from_pretrained(path)` loads it exactly as it loads SD1.5 and
every diffusion code path of mmalign runs on it.

The build has three resumable stages, each checkpointed in `work_dir`:
1. the VAE learns to reconstruct 32x32 renders (flat and outlined, so a tuned
   model can still draw a style the base never produces) -> 16x16x4 latents
   (a factor-2 VAE: at factor 4, 8x8 latents, the decoder blurs small shapes
   past recognition within any CPU budget we tried);
2. every training image is encoded once (cached latents, mean and std);
3. the UNet and the text encoder learn to denoise those latents from the
   caption, with 10% empty captions for classifier-free guidance.

One module per job: `model` (components), `training` (settings, data, the stages), `sampling`
(loading, sampling, evaluation), `build` and `card`. Everything is re-exported here.
"""

from .build import build_toy_sd
from .card import write_card
from .model import IMAGE_SIZE, TEXT_MAX_LENGTH, build_models, toy_words
from .sampling import evaluate_toy_sd, load_pipeline, sample
from .training import (
    LOSS_WEIGHTS,
    ToySDSettings,
    encode_latents,
    loss_weights,
    train_unet,
    train_vae,
    training_images,
)

__all__ = [
    "IMAGE_SIZE",
    "LOSS_WEIGHTS",
    "TEXT_MAX_LENGTH",
    "ToySDSettings",
    "build_models",
    "build_toy_sd",
    "encode_latents",
    "evaluate_toy_sd",
    "load_pipeline",
    "loss_weights",
    "sample",
    "toy_words",
    "train_unet",
    "train_vae",
    "training_images",
    "write_card",
]
