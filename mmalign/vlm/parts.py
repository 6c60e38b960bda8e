"""Which parameters of a VLM are its image path (vision tower and projector), and which of them
train: LoRA's "all-linear" stays out of the image path (mmalign/vlm/lora.py), a full fine-tune
trains the parts `vlm.train_vision` / `vlm.train_projector` say (mmalign/vlm/recipe.py), and
features of a frozen image path are reused (mmalign/vlm/scorer.py)."""

from __future__ import annotations

import torch

# Module-name parts of the image path (vision tower and projector) across the families we load:
# LoRA "all-linear" stays out of them and the features they produce can be reused.
VISION_PARTS = (
    "vision_tower",
    "visual",
    "vision_model",
    "multi_modal_projector",
    "connector",
    "image_newline",
)


def in_image_path(name: str) -> bool:
    return any(part in VISION_PARTS for part in name.split("."))


def full_finetune_trains(name: str, *, train_vision: bool, train_projector: bool) -> bool:
    """Whether parameter `name` trains in a full fine-tune (`lora: null`): the language model
    always; in the image path, the projector side follows `vlm.train_projector`, the rest (the
    vision tower) `vlm.train_vision`. The projector side is a module named *projector* and
    LLaVA-NeXT's `image_newline`, the vector it appends after each row of projected features
    (in the language model's embedding space, as the projector's output is)."""
    if not in_image_path(name):
        return True
    projector = "projector" in name or "image_newline" in name.split(".")
    return train_projector if projector else train_vision


def image_path_trainable(model: torch.nn.Module) -> bool:
    """Whether any parameter between the pixels and the language model trains."""
    return any(p.requires_grad for n, p in model.named_parameters() if in_image_path(n))
