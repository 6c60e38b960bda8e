"""The diffusion recipe: what `mmalign train` needs from an SD1.5 / SDXL / toy-sd model.

It loads the pipeline, adds LoRA (or trains the full UNet against a frozen copy), opens the
pairs, optionally pre-encodes them, scores batches with `DiffusionPairScorer`, samples the
validation grid and saves the result in the ecosystem's format.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from ..train.config import Config
from .compiled import CompiledViews, StepModules
from .data import check_hard_labels, has_soft_labels
from .encode import Encoder, fingerprint
from .load import load_pipeline
from .lora import add_lora, check_targets, save_lora
from .recipe_base import PairRecipeBase, validation_prompts
from .scorer import PREDICTION_TYPES, DiffusionPairScorer
from .trajectory import make_trajectory

FULL_UNET_DIR = "unet"
__all__ = ["FULL_UNET_DIR", "DiffusionRecipe", "run_info", "validation_prompts"]


class DiffusionRecipe(PairRecipeBase):
    scorer_class: type[DiffusionPairScorer] = DiffusionPairScorer  # PPD: its own scorer

    def __init__(self, cfg: Config, accelerator: Any):
        self.cfg = cfg
        self.accelerator = accelerator
        device = accelerator.device
        m = cfg.model
        self._warn_beta_scale()
        self.diffusion = load_pipeline(
            m.name_or_path, dtype=m.dtype, variant=m.variant, revision=m.revision, vae=m.vae,
            key="model.name_or_path", vae_key="model.vae",
        )  # fmt: skip
        if self.diffusion.family not in ("sd", "sdxl"):  # SD3 / FLUX: flow_recipe.FlowRecipe
            raise ConfigError(
                f"model.name_or_path: {m.name_or_path} is a flow-matching pipeline "
                f"({self.diffusion.family}); {type(self).__name__} trains SD1.5 / SDXL models "
                "(flow models train through `mmalign train` without a ppd: section)"
            )
        prediction = self.diffusion.prediction_type
        if prediction not in PREDICTION_TYPES:  # before the data is built (and pre-encoded)
            raise ConfigError(
                f"model.name_or_path: {m.name_or_path} has the prediction type {prediction!r}; "
                f"the diffusion scorer trains {' and '.join(PREDICTION_TYPES)} models"
            )
        if cfg.lora is not None:  # before the data is built: a typo in a target fails now
            check_targets(self.diffusion.unet, cfg.lora.target_modules)
        pipe = self.diffusion.pipe
        pipe.to(device)
        self.resolution = cfg.diffusion.resolution or self.diffusion.default_resolution
        rows = self._open_rows(self.diffusion.source if cfg.data.path.startswith("toy:") else None)
        d = cfg.diffusion
        self.encoder = Encoder(self.diffusion, vae_batch_size=d.vae_batch_size)
        images = self._pair_images()
        empty = self._open_dataset(
            images, lambda data: fingerprint(self.diffusion, self.resolution, data, len(rows))
        )
        self.model = pipe.unet
        reference = self._make_trainable()
        self._step_modules = StepModules(accelerator, CompiledViews(cfg.diffusion.compile))
        objective = cfg.build_objective()
        check_hard_labels(rows, objective)
        needs_ref = objective.needs_reference
        self.scorer = self.scorer_class(
            self.diffusion,
            empty,
            reference=reference if needs_ref else "none",  # type: ignore[arg-type]
            caption_dropout=cfg.diffusion.caption_dropout,
            dense_max_timestep=d.dense.max_timestep if d.dense is not None else None,
            use_labels=has_soft_labels(rows),
            trajectory=make_trajectory(
                d.trajectory, asdict(d.renoise), pipe.scheduler.config, self.diffusion.family
            ),
        )
        self.scorer.seed_dropout = bool(cfg.lora is not None and cfg.lora.dropout > 0)
        frozen = self.scorer.reference_unet  # full fine-tune: the frozen reference copy
        if frozen is not None:
            self.scorer.reference_unet = self._step_modules.views(frozen.to(device))
        self._text_dtype = pipe.text_encoder.dtype
        self.dense = None  # diffusion.dense: per-row weights 1 - H, computed once (dense.py)
        if d.dense is not None:
            from .dense import pair_weights

            latent = self.resolution // self.diffusion.vae_scale
            if self.cache is not None and not accelerator.is_main_process:
                accelerator.wait_for_everyone()  # the main process writes the cached weights
            try:
                self.dense = pair_weights(d.dense, images, latent, cache_dir=self.cache)
            finally:  # even when it fails, so the others are not left waiting at the barrier
                if self.cache is not None and accelerator.is_main_process:
                    accelerator.wait_for_everyone()

    def _flip_pairs(self) -> bool:
        # As diffusers' scripts: the SDXL one stacks chosen and rejected and flips them
        # together; the SD1.5 one flips each image on its own (train_diffusion_dpo*.py).
        return self.diffusion.family == "sdxl"

    def _make_trainable(self) -> str:
        """Add what trains (LoRA, or the whole UNet) and return the reference kind."""
        return self._lora_or_full(lambda: add_lora(self.model, self.cfg.lora))

    def to_device(self, batch: Any, rows: list[int], device: torch.device) -> dict[str, Any]:
        if self.cache is None:
            batch = self.encoder.encode(batch, rows)
        if self.dense is not None:
            batch = {**batch, "dense_weight": self.dense.rows(rows)}
        return {k: v.to(device) for k, v in batch.items()}

    def save(self, output_dir: Path) -> dict[str, Any]:
        if self.cfg.lora is not None:
            path = save_lora(output_dir, self.model, self.diffusion.family)
            return {"kind": "lora", "path": str(path)}
        folder = output_dir / FULL_UNET_DIR
        self.model.save_pretrained(folder, safe_serialization=True)
        return {"kind": "unet", "path": str(folder)}

    def describe(self) -> dict[str, Any]:
        return {
            "task": "diffusion",
            "base": self.diffusion.source,
            "family": self.diffusion.family,
            "prediction_type": self.diffusion.prediction_type,
            "resolution": self.resolution,
            "rows": len(self.dataset),
            **self.pairs_record,  # skipped rows, ties dropped and kept; toy: build_skipped
            "cache": str(self.cache) if self.cache else None,
        }


def run_info(path: str | Path) -> dict[str, Any] | None:
    """The `mmalign_run.json` of a training output_dir, or None."""
    f = Path(path) / "mmalign_run.json"
    return json.loads(f.read_text()) if f.is_file() else None
