"""The flow-matching recipe (SD3 / SD3.5, FLUX.1) and the choice between it and the DDPM one.

`diffusion_recipe(cfg, accelerator)` is what `mmalign train` runs for `model.kind: diffusion`:
it reads the scheduler a pipeline was saved with (`process_of`) and builds `FlowRecipe` for a
flow-matching model, `DiffusionRecipe` for an SD1.5 / SDXL one, after checking that the recipe
does not ask for the other process. `FlowRecipe` is `DiffusionRecipe`'s counterpart: load,
LoRA on the transformer (or the full transformer against a frozen copy), the pairs, the
optional pre-encoding cache (text embeddings in float16; its size is printed and recorded),
`FlowPairScorer`, the validation grid, and saving in the pipeline's own LoRA format.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from ..train.config import Config, DiffusionConfig
from .compiled import CompiledViews, StepModules
from .data import check_hard_labels, has_soft_labels
from .flow import FlowPairScorer, FlowSettings
from .flow_encode import TEXT_DTYPE, FlowEncoder, cache_size, flow_fingerprint
from .flow_load import (
    SCHNELL_MAX_SEQUENCE,
    _flux_without_guidance,
    _model_index,
    check_resolution,
    default_max_sequence,
    is_toy_flow,
    load_flow_pipeline,
    process_of,
)
from .flow_lora import add_flow_lora, check_flow_targets, save_flow_lora
from .flow_trajectory import FlowReNoiseTrajectory
from .recipe_base import PairRecipeBase
from .source import resolve_model
from .trajectory import renoise_settings

FULL_TRANSFORMER_DIR = "transformer"
MAX_PIPELINE_SEQUENCE = 512  # the pipelines' `check_inputs` limit on T5 tokens
# diffusion.* keys that mean something for flow-matching models only
FLOW_KEYS = (
    "sigma_sampling", "logit_mean", "logit_std", "mode_scale", "loss_weighting",
    "sigma_shift", "guidance", "max_sequence_length",
)  # fmt: skip


def _scheduler_name(source: str, revision: str | None) -> str:
    index = _model_index(resolve_model(source), revision) or {}
    return str((index.get("scheduler") or [None, "an unknown scheduler"])[-1])


def check_process(cfg: Config) -> str | None:
    """`flow` or `ddpm` for the recipe's model, or a ConfigError when the recipe asks for the
    other one (diffusion.process, or a flow-only key given for a DDPM model)."""
    m, d = cfg.model, cfg.diffusion
    found = process_of(m.name_or_path, m.revision)
    if found is None:
        return None
    scheduler = _scheduler_name(m.name_or_path, m.revision)
    if d.process != "auto" and d.process != found:
        raise ConfigError(
            f"diffusion.process: {d.process}, but {m.name_or_path} is a "
            f"{'flow-matching' if found == 'flow' else 'DDPM-family'} pipeline (its scheduler is "
            f"{scheduler}); use diffusion.process: {found} (or auto) or another model"
        )
    if found == "ddpm":
        given = [k for k in FLOW_KEYS if getattr(d, k) is not None] + (
            ["drop_t5"] if d.drop_t5 else []
        )
        if given:
            raise ConfigError(
                f"diffusion.{given[0]} applies to flow-matching models (SD3, FLUX), but "
                f"{m.name_or_path} is a DDPM-family pipeline (its scheduler is {scheduler}); "
                f"remove {', '.join('diffusion.' + k for k in given)}"
            )
    else:
        if d.dense is not None:
            raise ConfigError(
                f"diffusion.dense is implemented for DDPM models only; {m.name_or_path} is a "
                "flow-matching pipeline"
            )
    return found


def diffusion_recipe(cfg: Config, accelerator: Any) -> Any:
    """`FlowRecipe` for a flow-matching model, else `DiffusionRecipe`."""
    if check_process(cfg) == "flow" or cfg.diffusion.process == "flow":
        return FlowRecipe(cfg, accelerator)
    from .recipe import DiffusionRecipe

    return DiffusionRecipe(cfg, accelerator)


def check_max_sequence(length: int | None) -> None:
    """`diffusion.max_sequence_length` within what StableDiffusion3Pipeline and FluxPipeline
    sample with: their `__call__` refuses more than 512 T5 tokens, their `encode_prompt` (what
    training encodes with) does not, so a longer run trained and then could not be sampled."""
    if length is not None and not 1 <= length <= MAX_PIPELINE_SEQUENCE:
        raise ConfigError(
            f"diffusion.max_sequence_length: {length} must be 1 to {MAX_PIPELINE_SEQUENCE} "
            "(StableDiffusion3Pipeline and FluxPipeline sample with at most 512 T5 tokens; "
            "null: the family's default)"
        )


def check_schnell_sequence(pipe: Any, family: str, length: int | None) -> None:
    """FLUX without a guidance embedding (FLUX.1-schnell) reads at most 256 T5 tokens, its
    training length (BFL's reference code and diffusers' FLUX docs): a longer
    `diffusion.max_sequence_length` is refused before any data is read."""
    if family == "flux" and length is not None and length > SCHNELL_MAX_SEQUENCE:
        if _flux_without_guidance(pipe):
            raise ConfigError(
                f"diffusion.max_sequence_length: {length} is more T5 tokens than FLUX.1-schnell "
                f"(a FLUX model without a guidance embedding) reads, {SCHNELL_MAX_SEQUENCE}: "
                "use at most that, or null for its default"
            )


def flow_settings(d: DiffusionConfig) -> FlowSettings:
    defaults = FlowSettings()
    return FlowSettings(
        sampling=d.sigma_sampling or defaults.sampling,
        logit_mean=defaults.logit_mean if d.logit_mean is None else d.logit_mean,
        logit_std=defaults.logit_std if d.logit_std is None else d.logit_std,
        mode_scale=defaults.mode_scale if d.mode_scale is None else d.mode_scale,
        weighting=d.loss_weighting or defaults.weighting,
        shift=d.sigma_shift,
        guidance=d.guidance,
    )


class FlowRecipe(PairRecipeBase):
    ENCODERS = ("vae", "text_encoder", "text_encoder_2", "text_encoder_3")

    def __init__(self, cfg: Config, accelerator: Any):
        self.cfg = cfg
        self.accelerator = accelerator
        device = accelerator.device
        m, d = cfg.model, cfg.diffusion
        self._warn_beta_scale()
        check_max_sequence(d.max_sequence_length)  # before the load: nothing else needed
        self.diffusion = load_flow_pipeline(
            m.name_or_path, dtype=m.dtype, variant=m.variant, revision=m.revision,
            drop_t5=d.drop_t5, key="model.name_or_path",
        )  # fmt: skip
        model = self.diffusion
        if m.vae is not None:
            raise ConfigError("model.vae: flow-matching models keep their own float32 VAE")
        if cfg.lora is not None:  # before the data is built: a typo in a target fails now
            check_flow_targets(model.transformer, model.family, cfg.lora.target_modules)
        settings = flow_settings(d)  # checks the guidance a FLUX.1-dev model needs, too
        if model.guidance_embeds and settings.guidance is None:
            raise ConfigError(
                f"diffusion.guidance: {m.name_or_path} embeds a guidance value (FLUX.1-dev's "
                "guidance_embeds); set it, e.g. diffusion.guidance: 3.5 (diffusers' FLUX scripts)"
            )
        if not model.guidance_embeds and settings.guidance is not None:
            raise ConfigError(
                f"diffusion.guidance: {settings.guidance:g}, but {m.name_or_path} embeds no "
                "guidance value (only FLUX.1-dev-style models, with guidance_embeds, take one; "
                "classifier-free guidance at sampling is --guidance); remove diffusion.guidance"
            )
        pipe = model.pipe
        pipe.to(device)
        self.resolution = d.resolution or model.default_resolution
        multiple = model.vae_scale * 2  # SD3 patches 2x2 latents, FLUX packs them 2x2
        if self.resolution % multiple:
            raise ConfigError(
                f"diffusion.resolution: {self.resolution} is not a multiple of {multiple} "
                f"(VAE factor {model.vae_scale} x the 2x2 latent patches)"
            )
        check_resolution(model.pipe, self.resolution, "diffusion.resolution:", ConfigError)
        check_schnell_sequence(model.pipe, model.family, d.max_sequence_length)
        rows = self._open_rows(
            # toy data is sampled from toy-flow when it is the model being tuned (as the DDPM
            # path samples from its toy-sd); any other flow model trains on toy-sd's pairs
            model.source if cfg.data.path.startswith("toy:") and is_toy_flow(model.source)
            else None
        )  # fmt: skip
        self.max_sequence = d.max_sequence_length or default_max_sequence(model.pipe, model.family)
        # samples from this pipeline (validation, or a caller's) encode prompts as training does
        model.pipe.mmalign_max_sequence_length = self.max_sequence
        self.encoder = FlowEncoder(
            model, vae_batch_size=d.vae_batch_size, max_sequence_length=self.max_sequence
        )
        self.cache_mb: dict[str, float] | None = None
        empty = self._open_dataset(
            self._pair_images(),
            lambda data: flow_fingerprint(
                model, self.resolution, data, len(rows), self.max_sequence
            ),
        )
        self.model = model.transformer
        reference = self._make_trainable()
        self._step_modules = StepModules(accelerator, CompiledViews(cfg.diffusion.compile))
        objective = cfg.build_objective()
        check_hard_labels(rows, objective)
        needs_ref = objective.needs_reference
        self.scorer = FlowPairScorer(
            model,
            empty,
            reference=reference if needs_ref else "none",  # type: ignore[arg-type]
            settings=settings,
            caption_dropout=d.caption_dropout,
            use_labels=has_soft_labels(rows),
        )
        self.scorer.seed_dropout = bool(cfg.lora is not None and cfg.lora.dropout > 0)
        if d.trajectory == "renoise":  # SmPO: Euler inversion + ReNoise (flow_trajectory.py)
            self.scorer.trajectory = FlowReNoiseTrajectory(
                renoise_settings(asdict(d.renoise)), self.scorer.shift, self.scorer.num_timesteps
            )
        frozen = self.scorer.reference_model  # full fine-tune: the frozen reference copy
        if frozen is not None:
            self.scorer.reference_model = self._step_modules.views(frozen.to(device))

    def _make_trainable(self) -> str:
        return self._lora_or_full(
            lambda: add_flow_lora(self.model, self.diffusion.family, self.cfg.lora)
        )

    def _cache_built(self, folder: Path) -> None:
        self.cache_mb = cache_size(folder)
        print(
            f"mmalign: pre-encoding cache {folder}: {self.cache_mb['total_mb']:.2f} MB "
            f"({self.cache_mb['text_mb']:.2f} MB text embeddings in {TEXT_DTYPE}, "
            f"{self.cache_mb['latents_mb']:.2f} MB latents) for {self.cache_rows} pairs"
        )

    def _pipe_options(self) -> dict[str, Any]:
        return {"max_sequence_length": self.max_sequence}

    def to_device(self, batch: Any, rows: list[int], device: torch.device) -> dict[str, Any]:
        if self.cache is None:
            batch = self.encoder.encode(batch, rows)
        return {k: v.to(device) for k, v in batch.items()}

    def save(self, output_dir: Path) -> dict[str, Any]:
        if self.cfg.lora is not None:
            path = save_flow_lora(output_dir, self.model, self.diffusion.family)
            return {"kind": "lora", "path": str(path)}
        folder = output_dir / FULL_TRANSFORMER_DIR
        self.model.save_pretrained(folder, safe_serialization=True)
        return {"kind": "transformer", "path": str(folder)}

    def describe(self) -> dict[str, Any]:
        s = self.scorer.settings
        return {
            "task": "diffusion",
            "process": "flow",
            "base": self.diffusion.source,
            "family": self.diffusion.family,
            "resolution": self.resolution,
            "rows": len(self.dataset),
            **self.pairs_record,  # skipped rows, ties dropped and kept; toy: build_skipped
            "cache": str(self.cache) if self.cache else None,
            "cache_mb": self.cache_mb,
            "sigma": {
                "sampling": s.sampling,
                "logit_mean": s.logit_mean,
                "logit_std": s.logit_std,
                "mode_scale": s.mode_scale,
                "weighting": s.weighting,
                "shift": self.scorer.shift,
                "guidance": self.scorer.guidance,
            },
            "max_sequence_length": self.max_sequence,
            "t5": self.diffusion.has_t5,
            "trajectory": self.cfg.diffusion.trajectory,
        }
