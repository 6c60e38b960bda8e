"""The schema of an mmalign recipe: `mmalign train CONFIG [key=value ...]`.

One YAML file per recipe (see configs/). The objective is a list of terms,
`{pair, loss, weight, **loss kwargs}`, checked against the loss registry when
the config loads, so a typo fails before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import ConfigError
from ..losses import Objective


@dataclass
class ModelConfig:
    name_or_path: str  # a local folder or a hub id
    kind: Literal["diffusion", "vlm"] = "diffusion"
    revision: str | None = None
    variant: str | None = None  # e.g. "fp16" weight files
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # full precision unless asked


@dataclass
class LoraConfig:
    rank: int = 8
    alpha: float | None = None  # None: alpha = rank
    dropout: float = 0.0
    target_modules: list[str] | None = None  # None: the model family's usual attention layers

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"lora.rank must be >= 1, got {self.rank}")


@dataclass
class DataConfig:
    path: str  # a local dataset folder or a hub id
    split: str  # named explicitly: there is no silent default split
    max_samples: int | None = None


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 8  # pairs per device per step
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-5
    scale_lr: bool = False  # lr *= batch_size * accumulation * processes
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = (
        "constant_with_warmup"
    )
    warmup_steps: int = 0
    optimizer: Literal["adamw", "adafactor", "adamw8bit"] = "adamw"
    weight_decay: float = 1e-2
    max_grad_norm: float | None = 1.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    checkpoint_total_limit: int | None = 3
    resume_from: str | None = None  # "latest" or a checkpoint folder

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"train.learning_rate must be > 0, got {self.learning_rate}")


def _default_objective() -> list[dict[str, Any]]:
    return [{"pair": "main", "loss": "dpo", "beta": 0.1}]


@dataclass
class Config:
    model: ModelConfig
    data: DataConfig
    objective: list[dict[str, Any]] = field(default_factory=_default_objective)
    train: TrainConfig = field(default_factory=TrainConfig)
    lora: LoraConfig | None = field(default_factory=LoraConfig)  # null: full fine-tune
    output_dir: str = "runs/mmalign"

    def __post_init__(self) -> None:
        try:
            Objective.from_config(self.objective)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def build_objective(self) -> Objective:
        return Objective.from_config(self.objective)
