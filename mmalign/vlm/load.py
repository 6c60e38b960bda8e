"""Load vision-language models (LLaVA-1.5, LLaVA-NeXT, Qwen2-VL / Qwen2.5-VL, Idefics3 /
SmolVLM, toy-vlm) with their processors, through transformers' Auto classes.

`load_vlm` is the one entry point: a local folder or hub id, a dtype (full precision unless
asked), a revision, a device (the CPU unless given). `toy:vlm` names the shipped toy-vlm. A
folder holding a PEFT adapter (`adapter_config.json`) loads its base model and applies the
adapter.

`VLMRef` names the same model without loading it (its cache key and processor): for caches
that load the model only to compute a missing entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import InputError
from ..hub import Need, hub_errors, require
from ..weights import hub_commit, weight_files

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

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
TESTED_FAMILIES = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm")


@dataclass
class VLM:
    """A loaded vision-language model, its processor, and where it came from."""

    model: Any  # a transformers *ForConditionalGeneration (or a PeftModel around one)
    processor: Any
    source: str
    # Identifies the loaded weights (and dtype) for caches of what the model generated or
    # scored: a path alone would serve stale entries after the folder's weights change.
    weights_key: tuple[Any, ...] = ()

    @property
    def family(self) -> str:
        return str(self.core.config.model_type)

    @property
    def core(self) -> Any:
        """The transformers model under any PEFT wrapper."""
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)


def resolve_model(name_or_path: str | Path) -> str:
    """`toy:vlm` names the shipped toy-vlm; anything else is a folder or hub id as given."""
    if str(name_or_path) == "toy:vlm":
        from ..toy.paths import model_path

        return str(model_path("vlm"))
    return str(name_or_path)


def _dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def _sources(name_or_path: str | Path, adapter: str | Path | None) -> tuple[str, str | Path | None]:
    """(the model to load, the adapter on it): a folder that is itself a PEFT adapter names its
    base model (`base_model_name_or_path`)."""
    source = resolve_model(name_or_path)
    config_file = Path(source) / "adapter_config.json"
    if adapter is None and config_file.is_file():
        adapter, source = source, json.loads(config_file.read_text())["base_model_name_or_path"]
    return source, adapter


def _require(source: str, revision: str | None, adapter: str | Path | None, key: str) -> None:
    needs = [Need(source, key, file="config.json", revision=revision)]
    if adapter is not None:
        needs.append(Need(str(adapter), "adapter", file="adapter_config.json"))
    require(needs)


def _adapter_has_processor(adapter: str | Path | None) -> bool:
    return adapter is not None and (Path(adapter) / "tokenizer_config.json").is_file()


def _load_processor(source: str, revision: str | None, adapter: str | Path | None, key: str) -> Any:
    """`AutoProcessor` with its chat template: the adapter's own where it has one (it may hold
    tokens the base lacks, PRISM's stage tags), with a pad token (its EOS where it has none)."""
    from transformers import AutoProcessor

    with hub_errors(source, key):
        processor = AutoProcessor.from_pretrained(source, revision=revision)
    if getattr(processor, "chat_template", None) is None:
        raise ValueError(f"{source}: the processor has no chat template; mmalign needs one")
    if _adapter_has_processor(adapter):
        with hub_errors(str(adapter), "adapter"):
            processor = AutoProcessor.from_pretrained(str(adapter))
    tok = getattr(processor, "tokenizer", processor)
    if tok.pad_token is None and tok.eos_token is not None:
        # every batched processor call pads (collator, generation): a tokenizer without a pad
        # token pads with its EOS, masked out by the attention mask (as TRL's trainers set it)
        tok.pad_token = tok.eos_token
    return processor


def _loaded_key(
    dtype: str, source: str, revision: str | None, adapter: str | Path | None, config: Any
) -> tuple[Any, ...]:
    """`VLM.weights_key`: a hub id is keyed by the snapshot it resolved to (the loaded config's
    commit without a pinned revision; `hub_commit` in `weights_key` for a branch or tag too),
    so an upstream update is a new model to every cache keyed by it."""
    resolved = revision or getattr(config, "_commit_hash", None)
    return (dtype, *weights_key(source, resolved, adapter))


def load_vlm(
    name_or_path: str | Path,
    *,
    dtype: str = "float32",
    revision: str | None = None,
    adapter: str | Path | None = None,
    key: str = "model",
    device: str | torch.device | None = None,
) -> VLM:
    """The model (`AutoModelForImageTextToText`) and processor (`AutoProcessor`, with its chat
    template) from a folder or hub id. `adapter`: a PEFT adapter folder applied on top; a
    folder that is itself an adapter loads its `base_model_name_or_path` first. `device`:
    where the model (adapter included) is moved once loaded (None: where it loaded, the CPU;
    inference commands resolve theirs with `mmalign.devices.resolve_device`)."""
    from transformers import AutoModelForImageTextToText

    source, adapter = _sources(name_or_path, adapter)
    _require(source, revision, adapter, key)
    try:
        with hub_errors(source, key):
            model = AutoModelForImageTextToText.from_pretrained(
                source, dtype=_dtype(dtype), revision=revision
            )
    except InputError:
        raise
    except ValueError as err:
        raise ValueError(
            f"{source} is not an image-text-to-text model transformers can load ({err})"
        ) from None
    processor = _load_processor(source, revision, adapter, key)
    if _adapter_has_processor(adapter):
        # the adapter's tokens (PRISM's stage tags) have embedding rows the adapter carries:
        # the base grows to fit them first
        from .prism.format import match_vocab

        match_vocab(model, processor)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    if device is not None:
        model.to(device)
    model.eval()
    config = getattr(model, "config", None)
    return VLM(model, processor, source, _loaded_key(dtype, source, revision, adapter, config))


@dataclass(eq=False)
class VLMRef:
    """What `load_vlm` would load, before it is loaded: its `weights_key` and `processor`, the
    same as the loaded `VLM`'s, read from the files (the config, the processor's), and `load()`.

    A cache keyed by the model (PPD's user embeddings, `user_embed.cache_key`) finds its entry
    with a `VLMRef` and loads the model only to compute a missing one: a hit, and every process
    of a launch but the one that computes the entry, never holds the model (with
    `ppd.encoder_device: cpu`, N processes held N copies of the encoder in host memory)."""

    name_or_path: str | Path
    dtype: str = "float32"
    revision: str | None = None
    adapter: str | Path | None = None
    key: str = "model"
    device: str | torch.device | None = None
    _processor: Any = field(default=None, init=False, repr=False)
    _weights_key: tuple[Any, ...] | None = field(default=None, init=False, repr=False)
    _vlm: VLM | None = field(default=None, init=False, repr=False)

    @property
    def processor(self) -> Any:
        if self._processor is None:
            source, adapter = _sources(self.name_or_path, self.adapter)
            _require(source, self.revision, adapter, self.key)
            self._processor = _load_processor(source, self.revision, adapter, self.key)
        return self._processor

    @property
    def weights_key(self) -> tuple[Any, ...]:
        if self._weights_key is None:
            from transformers import AutoConfig

            source, adapter = _sources(self.name_or_path, self.adapter)
            _require(source, self.revision, adapter, self.key)
            config = None
            if self.revision is None:  # the commit it resolves to, as the loaded model's config
                with hub_errors(source, self.key):
                    config = AutoConfig.from_pretrained(source)
            self._weights_key = _loaded_key(self.dtype, source, self.revision, adapter, config)
        return self._weights_key

    def load(self) -> VLM:
        """`load_vlm` with these settings (the model on `device`), once: later calls return
        the same VLM (a caller with several entries to compute loads it once; dropping the
        `VLMRef` frees it)."""
        if self._vlm is None:
            self._vlm = load_vlm(
                self.name_or_path, dtype=self.dtype, revision=self.revision,
                adapter=self.adapter, key=self.key, device=self.device,
            )  # fmt: skip
        return self._vlm


def weights_key(source: str, revision: str | None, adapter: str | Path | None) -> tuple:
    """The model folder's and the adapter's weight files (`mmalign.weights.weight_files`);
    a hub id with its revision (the pinned one, or the snapshot commit it resolved to) and the
    commit of the cached snapshot that revision names (`weights.hub_commit`; None for a local
    folder): a branch or tag the cache moved to a new commit is another model."""
    adapter_name = str(adapter) if adapter else None
    commit = hub_commit(source, revision)
    key = (source, revision, weight_files(source), adapter_name, weight_files(adapter))
    # only where there is one: a local model's key stays what searches and caches recorded
    return key if commit is None else (*key, commit)


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
