"""The schema of an mmalign recipe: `mmalign train CONFIG [key=value ...]`.

One YAML file per recipe (see configs/). The objective is a list of terms,
`{pair, loss, weight, **loss kwargs}`, checked against the loss registry when
the config loads, so a typo fails before any model is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import ConfigError
from ..losses import Objective
from .diffusion_config import DenseConfig, DiffusionConfig, RenoiseConfig

__all__ = [
    "Config",
    "DataConfig",
    "DenseConfig",
    "DiffusionConfig",
    "LoraConfig",
    "ModelConfig",
    "PPDConfig",
    "RenoiseConfig",
    "TrainConfig",
    "VLMConfig",
    "ValidationConfig",
]


@dataclass
class ModelConfig:
    name_or_path: str  # a local folder or a hub id
    kind: Literal["diffusion", "vlm", "reward"] = "diffusion"  # reward: a dense reward head
    revision: str | None = None
    variant: str | None = None  # e.g. "fp16" weight files
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # full precision unless asked
    # a VAE in dtype when fp16-safe (force_upcast: false), else float32; none: the model's VAE,
    # float32
    vae: str | None = None


@dataclass
class LoraConfig:
    rank: int = 8
    alpha: float | None = None  # None: alpha = rank
    dropout: float = 0.0
    target_modules: list[str] | None = None  # None: the model family's usual attention layers

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"lora.rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:  # else torch's traceback once the model is loaded
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if self.alpha is not None and not self.alpha > 0:  # 0 disables the adapter, < 0 flips it
            raise ValueError(f"lora.alpha must be > 0 (or null: alpha = rank), got {self.alpha}")


TOY_SPLIT = "train"  # the split a toy dataset is built as (toy/datasets; its cards say so)


@dataclass
class DataConfig:
    """`data:` of a recipe, or the name of a dataset card (`data: datasets/pickapic_v2.yaml`,
    `data: {card: pickapic_v2, split: validation}`) whose keys fill in what is not given."""

    path: str  # a local dataset folder, a hub id, or toy:<kind> (built on first use, cached)
    split: str  # named explicitly: there is no silent default split
    max_samples: int | None = None
    toy: dict[str, Any] | None = None  # toy:<kind> builder options, e.g. {n: 512}
    num_workers: int = 0  # DataLoader workers decoding images
    keep_identical: bool = False  # keep Pick-a-Pic's are_different: false rows (Diffusion-DPO)
    # SmPO soft labels from a reward model (mmalign/diffusion/smooth.py), e.g.
    # {scorer: toy:fidelity}; keys scorer (default pickscore), batch_size, device
    smooth: dict[str, Any] | None = None
    # keep the pairs a per-pair diagnostic selects, computed with the policy model before
    # training (VLM only): `ln_ches:keep_lowest=0.05`, the spelling of `mmalign data diagnose
    # --filter` (mmalign/data/pair_filter.py)
    filter: str | None = None

    @staticmethod
    def expand_raw(raw: Any) -> Any:
        from ..data.cards import expand_data

        return expand_data(raw)

    def __post_init__(self) -> None:
        # Local paths are checked when a command starts (mmalign/train/sources.py): a shipped
        # recipe names data the user puts there, and `config show` must still print it.
        if self.toy and not self.path.startswith("toy:"):
            from ..hub import missing_local

            if missing_local(self.path):  # the likelier mistake: the path, not data.toy
                raise ConfigError(f"data.path: {self.path} does not exist (no such local folder)")
            raise ConfigError(f"data.toy is only for data.path: toy:<kind>, not {self.path}")
        if self.path.startswith("toy:") and self.split != TOY_SPLIT:
            raise ConfigError(  # it was ignored: the training rows trained whatever it said
                f"data.split: {self.split}: toy data is built, not split ({self.path} is built "
                f"for the run; data.split must be {TOY_SPLIT}). For rows on the held-out toy "
                "prompts set data.toy.prompt_split: heldout (a new data.toy.seed draws others)"
            )
        if self.smooth is not None:
            unknown = sorted(set(self.smooth) - {"scorer", "batch_size", "device", "scorer_path"})
            if unknown:
                raise ConfigError(
                    f"data.smooth: unknown key(s) {', '.join(unknown)}; "
                    "use scorer, batch_size, device, scorer_path"
                )
            from .diffusion_config import check_scorer

            check_scorer(self.smooth.get("scorer", "pickscore"), "data.smooth.scorer")
        if self.filter is not None:
            from ..data.pair_filter import parse_filter

            try:
                parse_filter(self.filter)
            except ValueError as err:
                raise ConfigError(f"data.filter: {err}") from None


@dataclass
class PPDConfig:
    """`ppd:` (diffusion only): PPD (Dang et al. CVPR 2025, mmalign/diffusion/ppd_recipe.py).
    The denoiser gets an IP-Adapter user branch (only it trains; `lora: null`), each pair is
    scored conditioned on its user's embedding, the reference is the branch off."""

    encoder: str = "toy:vlm"  # the VLM that reads each user's few-shot examples
    shots: int = 4  # examples per user (the paper's N = 4)
    layer: int = -2  # hidden state pooled into the embedding
    pooling: Literal["mean", "last", "contrast", "contrast_tokens"] = "mean"
    user_drop: float = 0.1  # probability a pair's embedding is zeroed (the unconditional user)
    embeddings: str | None = None  # precomputed `mmalign data user-embed` output; None: compute
    batch_size: int = 8  # users per encoder forward pass
    # the encoder's device: auto, the training accelerator's; cpu, off the GPU (where the
    # diffusion model already is: a 7B VLM in float32 is ~28 GB more there)
    encoder_device: Literal["auto", "cpu"] = "auto"
    # the encoder's dtype (not model.dtype), recorded with the run: new users are embedded so
    encoder_dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    def __post_init__(self) -> None:
        if self.shots < 1:
            raise ValueError(f"ppd.shots must be >= 1, got {self.shots}")
        if not 0.0 <= self.user_drop < 1.0:
            raise ValueError(f"ppd.user_drop must be in [0, 1), got {self.user_drop}")


@dataclass
class VLMConfig:
    """VLM-only settings (METHODS.md section 3)."""

    max_length: int | None = None  # rows longer than this are skipped and counted, never cut
    strict: bool = False  # raise on the first row that does not fit, naming it
    reference: Literal["auto", "adapters", "copy", "precomputed"] = "auto"  # auto: adapters
    train_vision: bool = False  # full fine-tune: train the vision tower too (LLaVA freezes it)
    # full fine-tune: train the projector (LLaVA's stage 2 does); false keeps the image features
    # the language model reads as loaded (configs/toy/prism_sft.yaml, docs/results.md). The
    # projector: *projector* modules and LLaVA-NeXT's image_newline; Qwen2-VL's merger and
    # Idefics3's connector belong to the vision side (train_vision)
    train_projector: bool = True
    bpo_form: Literal["objective", "extra_rows"] = "objective"  # extra_rows: the released code
    blind_batch_size: int = 32  # generating blind responses (BPO) when the data has none
    blind_max_new_tokens: int = 32
    merge: bool = False  # also save the base model with the adapter merged in
    # zero every dropout rate of the model as loaded (TRL's DPOConfig.disable_dropout, on by
    # default): noisy policy and reference log-probs; lora.dropout is kept (mmalign/vlm/dropout.py)
    disable_dropout: bool = True
    # completions that share a prompt run in one row, the prompt once (mmalign/vlm/packing.py);
    # used where the model supports it and a test shows it exact (LLaVA; not Qwen2-VL's M-RoPE)
    pack_prompts: bool = True
    # PRISM (mmalign/vlm/prism): add the stage tags as special tokens (their embedding rows
    # train and save with a LoRA adapter); a step-level prefix ending before OUTPUT gets no
    # end-of-turn token
    prism: bool = False
    # warn once when the chosen answers' summed log-likelihood has fallen by more than this
    # many nats since the start while the margin rose (likelihood displacement, Razin et al.;
    # mmalign/train/displacement.py); null: no warning (the metrics are logged anyway)
    displacement_alarm: float | None = 5.0

    def __post_init__(self) -> None:
        if self.displacement_alarm is not None and not self.displacement_alarm > 0:
            raise ValueError(
                f"vlm.displacement_alarm must be > 0 nats (or null), got {self.displacement_alarm}"
            )
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"vlm.max_length must be >= 8, got {self.max_length}")


@dataclass
class ValidationConfig:
    """A fixed-seed sample grid every `every` steps (0: only after the last step)."""

    every: int = 0
    prompts: list[str] | str = "toy:heldout:8"  # a list, or toy:heldout:N
    seed: int = 0
    steps: int = 20
    # None: the model's sampling guidance (sample.sampling_defaults: FLUX.1-dev's embedded 3.5,
    # SD3 7.0, toy-sd 2.5 ...), as `mmalign sample` and `eval winrate` draw
    guidance: float | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        # the spec's form now, not after training: its prompts are drawn only at the end
        from ..data.prompts import check_prompts

        if isinstance(self.prompts, str):
            try:
                check_prompts(self.prompts)
            except ValueError as err:
                raise ConfigError(f"validation.prompts: {err}") from None
        elif not all(isinstance(p, str) and p.strip() for p in self.prompts) or (
            self.enabled and not self.prompts
        ):
            raise ConfigError(
                "validation.prompts: a list needs at least one prompt, each a non-empty "
                f"string; got {self.prompts!r}"
            )


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
    # TF32 float32 matmuls on Ampere and later GPUs (diffusers' scripts' --allow_tf32; torch
    # already allows it in cuDNN convolutions); false leaves torch's defaults. Process-wide
    allow_tf32: bool = False
    # seconds a process waits for the others at a collective: the main process builds the
    # pre-encoding cache, soft labels and dense weights while the others wait (NCCL's default
    # 10 minutes stopped them mid-build); lower it to see a hung run fail sooner
    ddp_timeout: int = 86_400
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    checkpoint_total_limit: int | None = 3
    resume_from: str | None = None  # "latest" or a checkpoint folder
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])  # also wandb, trackio

    def __post_init__(self) -> None:
        names = ("max_steps", "batch_size", "gradient_accumulation_steps", "log_every",
                 "ddp_timeout")  # fmt: skip
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every < 1:
            raise ValueError(f"train.checkpoint_every must be >= 1, got {self.checkpoint_every}")
        # keep the newest N: 0 kept them all and -1 deleted each checkpoint as it was written
        if self.checkpoint_total_limit is not None and self.checkpoint_total_limit < 1:
            raise ValueError(
                "train.checkpoint_total_limit must be >= 1 (or null: keep every checkpoint), "
                f"got {self.checkpoint_total_limit}"
            )
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):  # .inf too
            raise ValueError(
                f"train.learning_rate must be a finite number > 0, got {self.learning_rate}"
            )
        if self.warmup_steps < 0:
            raise ValueError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.warmup_steps and self.lr_scheduler == "constant":  # diffusers' ignores it
            raise ValueError(
                f"train.warmup_steps: {self.warmup_steps} is unused by lr_scheduler: constant "
                "(no warmup); set lr_scheduler: constant_with_warmup, or warmup_steps: 0"
            )


def _default_objective() -> list[dict[str, Any]]:
    return [{"pair": "main", "loss": "dpo", "beta": 0.1}]


@dataclass
class Config:
    model: ModelConfig
    data: DataConfig
    objective: list[dict[str, Any]] = field(default_factory=_default_objective)
    train: TrainConfig = field(default_factory=TrainConfig)
    lora: LoraConfig | None = field(default_factory=LoraConfig)  # null: full fine-tune
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    vlm: VLMConfig = field(default_factory=VLMConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    ppd: PPDConfig | None = None  # PPD: personalized Diffusion-DPO (null: off)
    # model.kind reward: the dense head's options (mmalign/rewards/dense DenseRewardConfig)
    reward: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "runs/mmalign"

    def __post_init__(self) -> None:
        from ..losses import LOSSES
        from .objective_check import check_pairs, check_term_keys, check_terms, scorer_pairs

        defaults = {name: loss.defaults for name, loss in LOSSES.items()}
        check_term_keys(self.objective, defaults)
        try:
            Objective.from_config(self.objective)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        check_terms(self.objective, defaults)
        produced = scorer_pairs(self.model.kind)
        if produced is not None:
            check_pairs(self.objective, produced, self.model.kind)
        _check_master_weights(self)
        if self.data.filter is not None and self.model.kind != "vlm":
            raise ConfigError(
                f"data.filter: {self.data.filter!r} needs model.kind: vlm; CHES and LN-CHES "
                "are defined for language-model responses (hidden states of the response "
                f"tokens), not for model.kind: {self.model.kind}"
            )

        if self.ppd is not None:
            _check_ppd(self)

    def build_objective(self) -> Objective:
        return Objective.from_config(self.objective)


def _check_master_weights(cfg: Config) -> None:
    """A full fine-tune (lora: null) of a half-precision model trains float32 copies of the
    weights (train/optim.py float32_master_weights), which need the autocast of
    train.mixed_precision to meet the frozen half-precision parts (encoders, reference)."""
    dtype = cfg.model.dtype
    if cfg.lora is not None or dtype == "float32" or cfg.model.kind == "reward":
        return
    if cfg.train.mixed_precision == "no":
        precision = "bf16" if dtype == "bfloat16" else "fp16"
        raise ConfigError(
            f"train.mixed_precision: no, with model.dtype: {dtype} and lora: null: the weights "
            f"that train are kept in float32 (in {dtype} the optimizer's small steps round "
            f"away), which needs autocast; set train.mixed_precision: {precision}, or "
            "model.dtype: float32"
        )


def _check_ppd(cfg: Config) -> None:
    """PPD trains the user branch alone, on diffusion pairs, with the forward trajectory."""
    if cfg.model.kind != "diffusion":
        raise ConfigError(f"ppd: needs model.kind: diffusion, not {cfg.model.kind}")
    if cfg.lora is not None:
        raise ConfigError(
            "ppd: trains only the user branch (decoupled cross-attention); set lora: null"
        )
    if cfg.diffusion.trajectory != "forward":
        raise ConfigError("ppd: supports diffusion.trajectory: forward only")
