"""Dense reward heads (RAHF / ImageDoctor): four scores and two flaw heatmaps per image."""

from .model import DenseRewardConfig, DenseRewardModel, checkpoint_folder, hash_tokens
from .scorer import DenseScorer

__all__ = [
    "DenseRewardConfig",
    "DenseRewardModel",
    "DenseScorer",
    "checkpoint_folder",
    "hash_tokens",
]
