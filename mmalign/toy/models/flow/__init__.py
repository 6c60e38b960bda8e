"""`toy-flow`: a tiny Stable-Diffusion-3-architecture pipeline trained on the shapes world.

Same classes as SD3 (`SD3Transformer2DModel`, `AutoencoderKL`, two
`CLIPTextModelWithProjection`, `FlowMatchEulerDiscreteScheduler`; no T5), so
`StableDiffusion3Pipeline.from_pretrained(path)` loads it as it loads SD3.5 and every flow
code path of mmalign runs on it. It starts from toy-sd (tokenizer, text encoder
weights), so toy-sd is built first; its two stages (its VAE, then the MMDiT by rectified
flow) are resumable from its work dir.
"""

from .build import build_toy_flow
from .model import build_models, encode_text
from .sampling import evaluate_toy_flow, load_pipeline, sample
from .training import ToyFlowSettings, sample_sigmas, train_transformer, training_latents

__all__ = [
    "ToyFlowSettings",
    "build_models",
    "build_toy_flow",
    "encode_text",
    "evaluate_toy_flow",
    "load_pipeline",
    "sample",
    "sample_sigmas",
    "train_transformer",
    "training_latents",
]
