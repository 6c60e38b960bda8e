"""What the DDPM recipe (recipe.py, with PPD's on top) and the flow-matching one share.

Opening the pairs (skips reported, SmPO's soft labels), the optional pre-encoding cache, the
choice between LoRA and a full fine-tune with the reference it implies, where the encoders live
while training, batch handling, scoring through the step's (optionally compiled) modules, and
sampling the validation grid. Each recipe adds its own model loading, encoder, scorer, saving
and description.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from ..data.cache import cache_root, digest
from ..data.prompts import resolve_prompts
from ..data.run_record import pairs_record
from ..toy.build_record import build_left_out, toy_build
from ..train.config import Config
from ..train.sampler import rows_read
from .data import PairImages, collate, open_pairs
from .encode import EncodedPairs, precompute, stack


def validation_prompts(spec: list[str] | str) -> list[str]:
    """A list as given, or `toy:heldout:N` (the first N held-out toy prompts, seed 0)."""
    if isinstance(spec, list):
        return list(spec)
    return resolve_prompts(spec)


def check_dropout_embedding(mode: str, family: str) -> None:
    """`diffusion.caption_dropout_embedding: zeros` is SDXL's unconditional embedding; refused
    for the families whose pipelines condition that branch on the encoded empty prompt."""
    if mode == "zeros" and family != "sdxl":
        raise ConfigError(
            "diffusion.caption_dropout_embedding: 'zeros' is SDXL's unconditional embedding "
            "(StableDiffusionXLPipeline's force_zeros_for_empty_prompt); this model's pipeline "
            f"({family}) samples that branch on the encoded empty prompt: use 'empty'"
        )


def dropout_embedding(empty: dict[str, torch.Tensor], mode: str) -> dict[str, torch.Tensor]:
    """What a dropped caption conditions on: `empty`, the encoded "" (mode `empty`), or zeros
    of its shapes for every embedding, SDXL's prompt and pooled embeds alike (mode `zeros`)."""
    if mode == "zeros":
        return {key: torch.zeros_like(value) for key, value in empty.items()}
    return empty


class PairRecipeBase:
    """Mixed into `DiffusionRecipe` and `FlowRecipe`; they set the attributes below."""

    ENCODERS: tuple[str, ...] = ("vae", "text_encoder", "text_encoder_2")

    cfg: Config
    accelerator: Any
    diffusion: Any  # the loaded pipeline bundle (load.py / flow_load.py)
    encoder: Any  # Encoder / FlowEncoder
    model: torch.nn.Module  # what trains: the UNet or the transformer
    resolution: int
    scorer: Any
    _step_modules: Any  # compiled.StepModules

    def _warn_beta_scale(self) -> None:
        """Name every term that leaves beta at a language-model default (objective_check)."""
        from ..losses import LOSSES
        from ..train.objective_check import diffusion_beta_warnings

        if not self.accelerator.is_main_process:
            return
        defaults = {name: loss.defaults for name, loss in LOSSES.items()}
        for warning in diffusion_beta_warnings(self.cfg.objective, defaults):
            print(f"mmalign: warning: {warning}")

    # ------------------------------------------------------------------ data

    def _open_rows(self, model_source: str | None) -> Any:
        """The training pairs (`self.rows`, `self.report`); `model_source` samples toy data."""
        cfg, accelerator = self.cfg, self.accelerator
        rows, self.report = open_pairs(
            cfg.data.path, cfg.data.split, toy_options=cfg.data.toy, model=model_source,
            max_samples=cfg.data.max_samples, require_different=not cfg.data.keep_identical,
        )  # fmt: skip
        if accelerator.is_main_process and self.report.num_skipped:
            print(f"mmalign: {self.report}")
        # toy data: what its build left out (tied pairs) is in the run's record too, apart
        # from what this run's rows saw (`build_skipped`): data.max_samples takes a prefix
        built = toy_build(cfg.data.path, toy_options=cfg.data.toy, model=model_source)
        if accelerator.is_main_process and built is not None and built.skipped:
            print(f"mmalign: {build_left_out(cfg.data.path, built, cfg.data.max_samples)}")
        left_out = built.skipped if built is not None else None
        self.pairs_record = pairs_record(rows, self.report, left_out)  # describe(): run record
        if cfg.data.smooth is not None:  # SmPO soft labels from a reward model (smooth.py)
            from .smooth import smoothed_rows

            rows, smoothed = smoothed_rows(rows, cfg.data.smooth, accelerator)
            if accelerator.is_main_process:
                print(f"mmalign: {smoothed}")
        self.rows = rows
        return rows

    def _flip_pairs(self) -> bool:
        """Whether `diffusion.random_flip` flips a pair's two images together (one coin per
        pair) rather than each on its own; the family's recipe says."""
        return False

    def _pair_images(self) -> PairImages:
        d = self.cfg.diffusion
        flip_seed = self.cfg.train.seed if d.random_flip else None
        return PairImages(self.rows, self.resolution, resize_filter=d.resize_filter,
                          flip_seed=flip_seed, flip_pairs=self._flip_pairs())  # fmt: skip

    def _rows_to_encode(self, n: int) -> list[int] | None:
        """The rows of the `n` the run reads (`train.sampler.rows_read`), or None for all."""
        t = self.cfg.train
        return rows_read(n, max_steps=t.max_steps, batch_size=t.batch_size,
                         accumulation=t.gradient_accumulation_steps, world=self._world(),
                         seed=t.seed)  # fmt: skip

    def _world(self) -> int:
        return int(getattr(self.accelerator, "num_processes", 1))

    def _open_dataset(self, images: PairImages, fingerprint_of: Callable[[str], str]) -> Any:
        """`self.dataset`: the pre-encoded pairs with `diffusion.precompute` (built once, by
        the main process, in a folder named by `fingerprint_of(data key)`), else the images.
        A run shorter than one epoch encodes only the rows it reads (`_rows_to_encode`; the
        key names them, so another seed, length or global batch has its own cache).
        Returns what a dropped caption conditions on (`diffusion.caption_dropout_embedding`):
        the empty caption's encoding, or its zeros."""
        cfg, accelerator = self.cfg, self.accelerator
        d = cfg.diffusion
        check_dropout_embedding(d.caption_dropout_embedding, self.diffusion.family)
        self.cache: Path | None = None
        self.cache_rows: int | None = None  # the rows the cache holds (a run's, or all)
        if not d.precompute:
            self.dataset: torch.utils.data.Dataset = images
            return dropout_embedding(self.encoder.empty(), d.caption_dropout_embedding)
        # the data key holds the resize filter and the flips too: either changes the latents
        data = f"{self.rows._fingerprint};{images.describe()}"
        subset = self._rows_to_encode(len(images))
        self.cache_rows = len(images) if subset is None else len(subset)
        if subset is not None:  # a whole-data cache keeps its key (and is reused as before)
            data += f";rows={digest(subset)}"
        key = fingerprint_of(data)
        folder = Path(d.cache_dir or cache_root() / "encoded" / key)
        if accelerator.is_main_process:
            if subset is not None:
                t = cfg.train
                print(
                    f"mmalign: diffusion.precompute: encoding the {len(subset):,} of "
                    f"{len(images):,} pairs this run reads ({t.max_steps} steps x "
                    f"{t.batch_size * t.gradient_accumulation_steps * self._world()} pairs, "
                    f"seed {t.seed}); a longer run, "
                    "another seed or another global batch encodes its own"
                )
            precompute(self.encoder, images, folder, key, num_workers=cfg.data.num_workers,
                       rows=subset)  # fmt: skip
            self._cache_built(folder)
        accelerator.wait_for_everyone()
        self.cache = folder
        self.dataset = EncodedPairs(folder)
        # Training never runs the encoders: keep them off the accelerator until sampling.
        self._encoders_to("cpu")
        empty = self.dataset.empty  # type: ignore[attr-defined]
        return dropout_embedding(empty, d.caption_dropout_embedding)

    def _cache_built(self, folder: Path) -> None:
        """Called on the main process once the cache at `folder` is complete."""

    # ------------------------------------------------------------------ what trains

    def _lora_or_full(self, add_lora: Callable[[], None]) -> str:
        """LoRA (`add_lora`) or the whole model trains; returns the reference kind."""
        cfg = self.cfg
        if cfg.lora is not None:
            # Seeded here, not earlier: building the cache draws from the global generator,
            # and the cached and uncached runs must start from the same adapter.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.train.seed)
                add_lora()
        else:
            self.model.requires_grad_(True)
        reference = cfg.diffusion.reference
        if reference == "auto":
            reference = "adapters" if cfg.lora is not None else "copy"
        if reference == "adapters" and cfg.lora is None:
            raise ConfigError("diffusion.reference: 'adapters' needs lora; use 'copy' or 'auto'")
        return reference

    # ------------------------------------------------------------------ steps

    def _encoders_to(self, device: str | torch.device) -> None:
        pipe = self.diffusion.pipe
        for name in self.ENCODERS:
            module = getattr(pipe, name, None)
            if module is not None:
                module.to(device)

    def collate(self, items: list[Any]) -> Any:
        return stack(items) if self.cache is not None else collate(items)

    def score(self, model, batch, seeds, *, with_reference: bool):
        policy, base = self._step_modules(model)
        return self.scorer(policy, batch, seeds, with_reference=with_reference, base=base)

    # ------------------------------------------------------------------ validation

    @contextmanager
    def _sampling(self) -> Iterator[None]:
        """The model in eval mode, the encoders on the accelerator, and the VAE and the text
        encoders running in their own dtype outside autocast (validation runs under the
        training autocast: `sample.vae_in_own_precision`, `text_encoders_in_own_precision`;
        fp16 autocast makes T5's prompt embeddings NaN), restored after."""
        from .sample import text_encoders_in_own_precision, vae_in_own_precision

        if self.cache is not None:
            self._encoders_to(self.accelerator.device)
        was_training = self.model.training
        self.model.eval()
        try:
            pipe = self.diffusion.pipe
            with vae_in_own_precision(pipe.vae), text_encoders_in_own_precision(pipe):
                yield
        finally:
            self.model.train(was_training)
            if self.cache is not None:
                self._encoders_to("cpu")

    def _pipe_options(self) -> dict[str, Any]:
        """Extra keyword arguments of the pipeline call (flow: the text length)."""
        return {}

    def validation_guidance(self) -> float:
        """`validation.guidance`, else the model's own sampling guidance (`sampling_defaults`):
        for FLUX.1-dev the embedded value its training and `mmalign sample` use."""
        from .sample import sampling_defaults

        guidance = self.cfg.validation.guidance
        return float(sampling_defaults(self.diffusion, None, guidance)[1])

    def _sample(self, prompts: list[str], **extra: Any) -> list[Any]:
        """One PIL image per prompt, prompt i seeded `validation.seed + i`."""
        v, device = self.cfg.validation, self.accelerator.device
        gens = [torch.Generator(device).manual_seed(v.seed + i) for i in range(len(prompts))]
        guidance = self.validation_guidance()
        return self.diffusion.pipe(
            prompts, num_inference_steps=v.steps, guidance_scale=guidance, generator=gens,
            height=self.resolution, width=self.resolution, output_type="pil",
            **self._pipe_options(), **extra,
        ).images  # fmt: skip

    @torch.no_grad()
    def validate(self, step: int):
        from ..grid import image_grid

        prompts = validation_prompts(self.cfg.validation.prompts)
        with self._sampling():
            images = self._sample(prompts)
        return image_grid([images], [f"step {step}"], prompts)
