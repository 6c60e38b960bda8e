"""Load vision-language models (LLaVA-1.5, LLaVA-NeXT, LLaVA-OneVision, Qwen2-VL / Qwen2.5-VL,
Idefics3 / SmolVLM, toy-vlm) with their processors, through transformers' Auto classes.

`load_vlm` is the one entry point: a local folder or hub id, a dtype (full precision unless
asked), a revision, a device (the CPU unless given). `toy:vlm` names the shipped toy-vlm; a
training output_dir names its final adapter or model; a model of another kind (toy:sd, a
diffusion run) is refused naming what takes it (`mmalign.model_kind`). A
folder holding a PEFT adapter (`adapter_config.json`) loads its base model and applies the
adapter; a base that is itself an adapter folder (a LoRA run started from an SFT adapter,
`VLMRecipe`) is loaded first with its own adapter merged in; an adapter given on top of a
model brings the start adapters it was trained on too (`adapter_chain`). `merge_adapter`
merges an adapter into its base (training from an adapter folder, PRISM's search policy).

A model family outside `TESTED_FAMILIES` loads with a warning, once per family.

`VLMRef` names the same model without loading it (its cache key and processor): for caches
that load the model only to compute a missing entry.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import InputError
from ..hub import Need, hub_errors, looks_local, require
from ..model_kind import require_kind, run_weights
from ..weights import hub_commit, weight_files
from .adapter_chain import follow, held_already, is_adapter, resolve_model, starts_below

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# the families the scorer, collator and recipes are tested on (tiny models, tests/); another
# family loads with a warning (`warn_untested`): its template or image layout may need work
TESTED_FAMILIES = ("llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "idefics3",
                   "smolvlm")  # fmt: skip
_WARNED: set[str] = set()  # the untested families warned about in this process
_NOTED: set[tuple[str, str]] = set()  # (model, adapter) given twice, noted in this process


@dataclass
class VLM:
    """A loaded vision-language model, its processor, and where it came from."""

    model: Any  # a transformers *ForConditionalGeneration (or a PeftModel around one)
    processor: Any
    source: str
    # Identifies the loaded weights (and dtype) for caches of what the model generated or
    # scored: a path alone would serve stale entries after the folder's weights change.
    weights_key: tuple[Any, ...] = ()
    # the adapter folders applied on `source`, innermost first (all but the last merged in)
    adapters: tuple[str, ...] = ()

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


def _dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def _needer(key: str) -> str:
    """Who needs the VLM, for a wrong-kind message: a recipe, a config key, or the command."""
    if key.startswith("model."):
        return "a model.kind: vlm recipe"
    return key if "." in key else "this command"


def _model_source(name_or_path: str | Path, key: str) -> str:
    """The folder or id to load for `name_or_path`: a training output_dir gives its final
    weights (in the folder itself, wherever the run was made); another kind is refused."""
    require_kind(name_or_path, key, "vlm", _needer(key))
    source = resolve_model(name_or_path)
    weights = run_weights(source) if Path(source).is_dir() else None
    return source if weights is None else str(weights)


def _adapter_folder(adapter: str | Path, key: str) -> str:
    """The adapter given on top, checked before anything loads: a local one (it exists, or is
    spelled as a path) must be a PEFT adapter folder, else PEFT looks it up on the hub, with
    retries; a VLM training output_dir gives its final adapter. A hub id is `_require`'s."""
    name = str(adapter)
    if not looks_local(name):
        return name
    require(needs=[Need(name, key)])  # "does not exist (no such local folder or file)"
    require_kind(name, key, "vlm", key, noun="a VLM's PEFT adapter")
    folder = Path(name).expanduser()
    weights = run_weights(folder)
    if weights is not None:
        folder = weights
    if weights is not None and not (folder / "adapter_config.json").is_file():
        raise InputError(
            f"{key}: {name}: the run's final weights ({folder}) are a whole model, not an "
            "adapter: give the run as MODEL, with no adapter"
        )
    if not (folder / "adapter_config.json").is_file():
        raise InputError(
            f"{key}: {name} holds no adapter_config.json; {key} takes a PEFT adapter "
            "folder (a LoRA VLM run's adapter/, or the run's output_dir)"
        )
    return str(folder)


def _sources(
    name_or_path: str | Path, adapter: str | Path | None, key: str = "model",
    adapter_key: str = "adapter",
) -> tuple[str, tuple[str, ...]]:  # fmt: skip
    """(the model to load, the adapters on it, innermost first): a folder that is itself a PEFT
    adapter names its base model (`base_model_name_or_path`), which may be an adapter folder
    in turn (the adapter of a LoRA run that started from an adapter, `VLMRecipe.save`); an
    `adapter` given goes on top of them all, with the start adapters its own chain names that
    MODEL lacks between them (`adapter_chain.starts_below`; those a merged MODEL holds, as its
    `adapter_chain.MERGED_RECORD` names them, count as MODEL's, and those a merged folder X
    was trained from holds count as X's starts), so `load_vlm(BASE, adapter=X)` loads the
    weights `load_vlm(X)` does."""
    source, chain = follow(_model_source(name_or_path, key), name_or_path)
    if not source and chain:
        raise InputError(
            f"{key}: {chain[0]}'s adapter_config.json names no base_model_name_or_path: give "
            "its base model, and it as the adapter"
        )
    _not_a_model(source, name_or_path, key)
    if adapter is None:
        return source, tuple(chain)
    top = _adapter_folder(adapter, adapter_key)
    if not is_adapter(top):  # a hub adapter: PEFT reads it; its base is the user's MODEL
        return source, (*chain, top)
    again = held_already(source, chain, top)
    if again is not None:  # matched by fingerprint, as start adapters are: applied once
        _note_once(str(name_or_path), str(adapter),
                   f"{adapter_key} {adapter} is the adapter {key} {name_or_path} already holds "
                   f"({again}): applied once, not a second time")  # fmt: skip
        return source, tuple(chain)
    # a merged model (`vlm.merge: true`) holds its run's adapters: never applied again
    below = starts_below(source, chain, top, adapter, adapter_key, name_or_path, key)
    return source, (*below, top)


def _note_once(model: str, adapter: str, note: str) -> None:
    """Print `note` once per (model, adapter) in this process: a `VLMRef` resolves its sources
    for its processor, its weights key and its load."""
    if (model, adapter) not in _NOTED:
        _NOTED.add((model, adapter))
        print(f"mmalign: note: {note}", file=sys.stderr)


def _not_a_model(source: str, name: str | Path, key: str) -> None:
    """Refuse a local folder with no config.json (a training checkpoint, a folder of runs)
    before the processor or the model is read: transformers' own errors differ between the
    two (chat read the processor first and ended in a traceback)."""
    folder = Path(source).expanduser()
    if not source or not folder.is_dir() or (folder / "config.json").is_file():
        return
    given = f"{name} ({source})" if str(name) != source else source
    hint = ""
    if (folder / "state.json").is_file() and (folder / "trainable.safetensors").is_file():
        hint = (": it is a training checkpoint (what `train.resume_from` continues from); give "
                "the run's output_dir, or its adapter/")  # fmt: skip
    raise InputError(
        f"{key}: {given} is not an image-text-to-text model transformers can load (it holds "
        f"no config.json){hint}"
    )


def _require(source: str, revision: str | None, adapters: Sequence[str], key: str,
             adapter_key: str = "adapter") -> None:  # fmt: skip
    needs = [Need(source, key, file="config.json", revision=revision)]
    needs += [Need(a, adapter_key, file="adapter_config.json") for a in adapters]
    require(needs)


def _processor_adapter(adapters: Sequence[str]) -> str | None:
    """The outermost adapter folder that holds a processor (its tokenizer), or None."""
    held = [a for a in adapters if (Path(a) / "tokenizer_config.json").is_file()]
    return held[-1] if held else None


def _load_processor(source: str, revision: str | None, adapters: Sequence[str], key: str) -> Any:
    """`AutoProcessor` with its chat template: the adapter's own where it has one (it may hold
    tokens the base lacks, PRISM's stage tags), with a pad token (its EOS where it has none)."""
    from transformers import AutoProcessor

    try:
        with hub_errors(source, key):
            processor = AutoProcessor.from_pretrained(source, revision=revision)
    except InputError:
        raise
    except ValueError as err:  # no processor files: said as load_vlm says a model it can't load
        raise ValueError(
            f"{source} is not an image-text-to-text model transformers can load ({err})"
        ) from None
    if getattr(processor, "chat_template", None) is None:
        raise ValueError(f"{source}: the processor has no chat template; mmalign needs one")
    own = _processor_adapter(adapters)
    if own is not None:
        with hub_errors(own, "adapter"):
            processor = AutoProcessor.from_pretrained(own)
    tok = getattr(processor, "tokenizer", processor)
    if tok.pad_token is None and tok.eos_token is not None:
        # every batched processor call pads (collator, generation): a tokenizer without a pad
        # token pads with its EOS, masked out by the attention mask (as TRL's trainers set it)
        tok.pad_token = tok.eos_token
    return processor


def _loaded_key(
    dtype: str, source: str, revision: str | None, adapters: Sequence[str], config: Any
) -> tuple[Any, ...]:
    """`VLM.weights_key`: a hub id is keyed by the snapshot it resolved to (the loaded config's
    commit without a pinned revision; `hub_commit` in `weights_key` for a branch or tag too),
    so an upstream update is a new model to every cache keyed by it."""
    resolved = revision or getattr(config, "_commit_hash", None)
    return (dtype, *weights_key(source, resolved, adapters))


def warn_untested(family: str) -> None:
    """Warn once per process that `family` is outside `TESTED_FAMILIES`."""
    if family in TESTED_FAMILIES or family in _WARNED:
        return
    _WARNED.add(family)
    warnings.warn(
        f"model family {family!r} is not one mmalign is tested on ({', '.join(TESTED_FAMILIES)}); "
        "check that its chat template and image tokens collate as expected "
        "(`mmalign data diagnose` scores a few pairs)",
        stacklevel=3,
    )


def merge_adapter(vlm: VLM) -> bool:
    """Merge the PEFT adapter of `vlm` into its base model, in place (`merge_and_unload`): the
    model is then a plain transformers model whose weights are base + adapter. New LoRA goes on
    its layers and a full fine-tune saves all of them; an inference user (PRISM's policy) runs
    one model. Whether there was an adapter."""
    if not hasattr(vlm.model, "merge_and_unload"):
        return False
    vlm.model = vlm.model.merge_and_unload().eval()
    return True


def load_vlm(
    name_or_path: str | Path,
    *,
    dtype: str = "float32",
    revision: str | None = None,
    adapter: str | Path | None = None,
    key: str = "model",
    device: str | torch.device | None = None,
    adapter_key: str = "adapter",
    processor: Any = None,
) -> VLM:
    """The model (`AutoModelForImageTextToText`) and processor (`AutoProcessor`, with its chat
    template) from a folder or hub id. `adapter`: a PEFT adapter folder applied on top; a
    folder that is itself an adapter loads its `base_model_name_or_path` first (an adapter
    folder in turn is applied and merged in before it, `_sources`). `key`, `adapter_key`:
    where the user named the model and the adapter, for messages. `device`:
    where the model (adapter included) is moved once loaded (None: where it loaded, the CPU;
    inference commands resolve theirs with `mmalign.devices.resolve_device`). `processor`:
    the one `_load_processor` already read for these sources (`VLMRef.processor`, read before
    the model loads to check a prompt): used, not read again."""
    from transformers import AutoModelForImageTextToText

    source, adapters = _sources(name_or_path, adapter, key, adapter_key)
    _require(source, revision, adapters, key, adapter_key)
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
    warn_untested(str(model.config.model_type))
    if processor is None:
        processor = _load_processor(source, revision, adapters, key)
    if _processor_adapter(adapters) is not None:
        # the adapter's tokens (PRISM's stage tags) have embedding rows the adapter carries:
        # the base grows to fit them first
        from .prism.format import match_vocab

        match_vocab(model, processor)
    if adapters:
        from peft import PeftModel

        for i, folder in enumerate(adapters):
            if i:  # an adapter trained on the one before merged into its base
                model = model.merge_and_unload()
            given = adapter is not None and i == len(adapters) - 1  # the one given on top
            with hub_errors(folder, adapter_key if given else key):
                model = PeftModel.from_pretrained(model, folder)
    if device is not None:
        model.to(device)
    model.eval()
    config = getattr(model, "config", None)
    return VLM(model, processor, source, _loaded_key(dtype, source, revision, adapters, config),
               adapters)  # fmt: skip


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
    adapter_key: str = "adapter"
    _processor: Any = field(default=None, init=False, repr=False)
    _weights_key: tuple[Any, ...] | None = field(default=None, init=False, repr=False)
    _vlm: VLM | None = field(default=None, init=False, repr=False)

    def _sources(self) -> tuple[str, tuple[str, ...]]:
        source, adapters = _sources(self.name_or_path, self.adapter, self.key, self.adapter_key)
        _require(source, self.revision, adapters, self.key, self.adapter_key)
        return source, adapters

    @property
    def processor(self) -> Any:
        if self._processor is None:
            source, adapters = self._sources()
            self._processor = _load_processor(source, self.revision, adapters, self.key)
        return self._processor

    @property
    def weights_key(self) -> tuple[Any, ...]:
        if self._weights_key is None:
            from transformers import AutoConfig

            source, adapters = self._sources()
            config = None
            if self.revision is None:  # the commit it resolves to, as the loaded model's config
                with hub_errors(source, self.key):
                    config = AutoConfig.from_pretrained(source)
            self._weights_key = _loaded_key(self.dtype, source, self.revision, adapters, config)
        return self._weights_key

    def load(self) -> VLM:
        """`load_vlm` with these settings (the model on `device`), once: later calls return
        the same VLM (a caller with several entries to compute loads it once; dropping the
        `VLMRef` frees it). A processor already read (`processor`) is the VLM's: not read
        again."""
        if self._vlm is None:
            self._vlm = load_vlm(
                self.name_or_path, dtype=self.dtype, revision=self.revision,
                adapter=self.adapter, key=self.key, device=self.device,
                adapter_key=self.adapter_key, processor=self._processor,
            )  # fmt: skip
            self._processor = self._vlm.processor
        return self._vlm


def weights_key(source: str, revision: str | None,
                adapter: str | Path | Sequence[str] | None) -> tuple:  # fmt: skip
    """The model folder's and the adapters' weight files (`mmalign.weights.weight_files`);
    a hub id with its revision (the pinned one, or the snapshot commit it resolved to) and the
    commit of the cached snapshot that revision names (`weights.hub_commit`; None for a local
    folder): a branch or tag the cache moved to a new commit is another model. `adapter`: one
    folder, or the chain `load_vlm` applies (innermost first)."""
    chain = [adapter] if isinstance(adapter, (str, Path)) else list(adapter or ())
    commit = hub_commit(source, revision)
    if len(chain) <= 1:  # one adapter or none: the key searches and caches recorded
        one = str(chain[0]) if chain else None
        key: tuple = (source, revision, weight_files(source), one, weight_files(one))
    else:
        names = tuple(str(a) for a in chain)
        key = (source, revision, weight_files(source), names, [weight_files(a) for a in names])
    # only where there is one: a local model's key stays what searches and caches recorded
    return key if commit is None else (*key, commit)
