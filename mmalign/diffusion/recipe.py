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

from ..data.cache import cache_root
from ..data.prompts import resolve_prompts
from ..train.config import Config
from .compiled import CompiledViews, StepModules
from .data import PairImages, collate, has_soft_labels, open_pairs
from .encode import EncodedPairs, Encoder, fingerprint, precompute, stack
from .load import load_pipeline
from .lora import add_lora, check_targets, save_lora
from .scorer import DiffusionPairScorer
from .smooth import smoothed_rows
from .trajectory import make_trajectory

FULL_UNET_DIR = "unet"


def validation_prompts(spec: list[str] | str) -> list[str]:
    """A list as given, or `toy:heldout:N` (the first N held-out toy prompts, seed 0)."""
    if isinstance(spec, list):
        return list(spec)
    return resolve_prompts(spec)


class DiffusionRecipe:
    scorer_class: type[DiffusionPairScorer] = DiffusionPairScorer  # PPD: its own scorer

    def __init__(self, cfg: Config, accelerator: Any):
        self.cfg = cfg
        self.accelerator = accelerator
        device = accelerator.device
        m = cfg.model
        self.diffusion = load_pipeline(
            m.name_or_path, dtype=m.dtype, variant=m.variant, revision=m.revision, vae=m.vae
        )
        if self.diffusion.family not in ("sd", "sdxl"):  # SD3 / FLUX: flow_recipe.FlowRecipe
            from ..config import ConfigError

            raise ConfigError(
                f"model.name_or_path: {m.name_or_path} is a flow-matching pipeline "
                f"({self.diffusion.family}); {type(self).__name__} trains SD1.5 / SDXL models "
                "(flow models train through `mmalign train` without a ppd: section)"
            )
        if cfg.lora is not None:  # before the data is built: a typo in a target fails now
            check_targets(self.diffusion.unet, cfg.lora.target_modules)
        pipe = self.diffusion.pipe
        pipe.to(device)
        self.resolution = cfg.diffusion.resolution or self.diffusion.default_resolution
        rows, self.report = open_pairs(
            cfg.data.path,
            cfg.data.split,
            toy_options=cfg.data.toy,
            model=self.diffusion.source if cfg.data.path.startswith("toy:") else None,
            max_samples=cfg.data.max_samples,
        )
        if accelerator.is_main_process and self.report.num_skipped:
            print(f"mmalign: {self.report}")
        if cfg.data.smooth is not None:  # SmPO soft labels from a reward model (smooth.py)
            rows, smoothed = smoothed_rows(rows, cfg.data.smooth, accelerator)
            if accelerator.is_main_process:
                print(f"mmalign: {smoothed}")
        self.rows = rows
        d = cfg.diffusion
        self.encoder = Encoder(self.diffusion, vae_batch_size=d.vae_batch_size)
        self.cache: Path | None = None
        flip_seed = cfg.train.seed if d.random_flip else None
        images = PairImages(
            rows, self.resolution, resize_filter=d.resize_filter, flip_seed=flip_seed
        )
        if cfg.diffusion.precompute:
            data_key = f"{rows._fingerprint};{images.describe()}"  # the filter and flips too
            key = fingerprint(self.diffusion, self.resolution, data_key, len(rows))
            folder = Path(cfg.diffusion.cache_dir or cache_root() / "encoded" / key)
            if accelerator.is_main_process:
                precompute(self.encoder, images, folder, key, num_workers=cfg.data.num_workers)
            accelerator.wait_for_everyone()
            self.cache = folder
            self.dataset: torch.utils.data.Dataset = EncodedPairs(folder)
            empty = self.dataset.empty  # type: ignore[attr-defined]
            # Training never runs the encoders: keep them off the accelerator until sampling.
            self._encoders_to("cpu")
        else:
            self.dataset = images
            empty = self.encoder.empty()
        self.model = pipe.unet
        reference = self._make_trainable()
        self._step_modules = StepModules(accelerator, CompiledViews(cfg.diffusion.compile))
        needs_ref = cfg.build_objective().needs_reference
        self.scorer = self.scorer_class(
            self.diffusion,
            empty,
            reference=reference if needs_ref else "none",  # type: ignore[arg-type]
            caption_dropout=cfg.diffusion.caption_dropout,
            use_labels=has_soft_labels(rows),
            trajectory=make_trajectory(
                d.trajectory, asdict(d.renoise), pipe.scheduler.config, self.diffusion.family
            ),
        )
        frozen = self.scorer.reference_unet  # full fine-tune: the frozen reference copy
        if frozen is not None:
            self.scorer.reference_unet = self._step_modules.views(frozen.to(device))
        self._text_dtype = pipe.text_encoder.dtype
        self.dense = None  # diffusion.dense: per-row weights 1 - H, computed once (dense.py)
        if d.dense is not None:
            from .dense import pair_weights

            self.dense = pair_weights(d.dense, images, self.resolution // self.diffusion.vae_scale)

    def _make_trainable(self) -> str:
        """Add what trains (LoRA, or the whole UNet) and return the reference kind."""
        cfg = self.cfg
        if cfg.lora is not None:
            # Seeded here, not earlier: building the cache draws from the global generator,
            # and the cached and uncached runs must start from the same adapter.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.train.seed)
                add_lora(self.model, cfg.lora)
        else:
            self.model.requires_grad_(True)
        reference = cfg.diffusion.reference
        if reference == "auto":
            reference = "adapters" if cfg.lora is not None else "copy"
        if reference == "adapters" and cfg.lora is None:
            raise ValueError("diffusion.reference: 'adapters' needs lora; use 'copy' or 'auto'")
        return reference

    def _encoders_to(self, device: str | torch.device) -> None:
        pipe = self.diffusion.pipe
        for name in ("vae", "text_encoder", "text_encoder_2"):
            module = getattr(pipe, name, None)
            if module is not None:
                module.to(device)

    def collate(self, items: list[Any]) -> Any:
        return stack(items) if self.cache is not None else collate(items)

    def to_device(self, batch: Any, rows: list[int], device: torch.device) -> dict[str, Any]:
        if self.cache is None:
            batch = self.encoder.encode(batch, rows)
        if self.dense is not None:
            batch = {**batch, "dense_weight": self.dense.rows(rows)}
        return {k: v.to(device) for k, v in batch.items()}

    def score(self, model, batch, seeds, *, with_reference: bool):
        policy, base = self._step_modules(model)
        return self.scorer(policy, batch, seeds, with_reference=with_reference, base=base)

    @torch.no_grad()
    def validate(self, step: int):
        from ..grid import image_grid

        v = self.cfg.validation
        prompts = validation_prompts(v.prompts)
        if self.cache is not None:
            self._encoders_to(self.accelerator.device)
        pipe = self.diffusion.pipe
        was_training = self.model.training
        self.model.eval()
        gens = [
            torch.Generator(self.accelerator.device).manual_seed(v.seed + i)
            for i in range(len(prompts))
        ]
        images = pipe(
            prompts, num_inference_steps=v.steps, guidance_scale=v.guidance, generator=gens,
            height=self.resolution, width=self.resolution, output_type="pil",
        ).images  # fmt: skip
        self.model.train(was_training)
        if self.cache is not None:
            self._encoders_to("cpu")
        return image_grid([images], [f"step {step}"], prompts)

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
            "skipped": self.report.skipped,
            "cache": str(self.cache) if self.cache else None,
        }


def run_info(path: str | Path) -> dict[str, Any] | None:
    """The `mmalign_run.json` of a training output_dir, or None."""
    f = Path(path) / "mmalign_run.json"
    return json.loads(f.read_text()) if f.is_file() else None
