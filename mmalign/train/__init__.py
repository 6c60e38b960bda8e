"""Training: the config schema and the one training loop every recipe uses."""

from .config import (
    Config,
    DataConfig,
    DiffusionConfig,
    LoraConfig,
    ModelConfig,
    TrainConfig,
    ValidationConfig,
    VLMConfig,
)

__all__ = [
    "Config",
    "DataConfig",
    "DiffusionConfig",
    "LoraConfig",
    "ModelConfig",
    "TrainConfig",
    "VLMConfig",
    "ValidationConfig",
]
