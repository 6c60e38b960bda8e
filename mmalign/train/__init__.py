"""Training: the config schema (and, with the diffusion issue, the one training loop)."""

from .config import Config, DataConfig, LoraConfig, ModelConfig, TrainConfig

__all__ = ["Config", "DataConfig", "LoraConfig", "ModelConfig", "TrainConfig"]
