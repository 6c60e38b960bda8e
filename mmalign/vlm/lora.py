"""LoRA on a VLM's language model through peft; saved as a PEFT adapter folder.

"all-linear" here means every linear layer of the language model: peft's own "all-linear"
would also adapt the vision tower and the projector, which LLaVA-style recipes keep frozen
(and which would stop the image features from being shared with the reference).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..train.config import LoraConfig
from .adapter_chain import write_merged_record
from .parts import in_image_path

ADAPTER_DIR = "adapter"


def lora_targets(model: torch.nn.Module, names: list[str] | None) -> list[str]:
    """Full names of the language model's linear layers (all, or those ending in `names`)."""
    out_head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    targets = []
    for full, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is out_head or in_image_path(full):
            continue
        if names is None or any(full == n or full.endswith("." + n) for n in names):
            targets.append(full)
    if not targets:
        from ..config import ConfigError

        linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        leaves = sorted({n.rsplit(".", 1)[-1] for n in linear if not in_image_path(n)})
        raise ConfigError(
            f"lora.target_modules {names} match no linear layer of the language model; "
            f"its linear layers end in: {', '.join(leaves[:12])}"
        )
    return targets


def add_lora(model: Any, cfg: LoraConfig, trainable_tokens: list[int] | None = None) -> Any:
    """A PeftModel with a trainable LoRA adapter on the language model; all else frozen.
    `trainable_tokens`: embedding rows trained and saved with the adapter (tokens added to the
    vocabulary, e.g. PRISM's stage tags; a tied output head shares them)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = lora_targets(model, cfg.target_modules)
    config = PeftLoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha if cfg.alpha is not None else cfg.rank,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        trainable_token_indices={"embed_tokens": list(trainable_tokens)}
        if trainable_tokens
        else None,
    )
    model.requires_grad_(False)
    return get_peft_model(model, config)


def save_adapter(model: Any, processor: Any, out_dir: str | Path) -> Path:
    """The adapter folder `PeftModel.from_pretrained(base, folder)` loads (plus the processor,
    so `mmalign chat folder` works on its own)."""
    folder = Path(out_dir) / ADAPTER_DIR
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder


def save_merged(model: Any, processor: Any, out_dir: str | Path, base: str = "",
                adapters: Sequence[str | Path] = ()) -> Path:  # fmt: skip
    """The base model with the adapter merged in, a plain transformers folder. `base`, the
    model it was loaded from, and `adapters`, the adapter folders now merged into it (innermost
    first: the run's start adapters and its own saved `adapter/`), are recorded beside the
    weights (`adapter_chain.MERGED_RECORD`): an adapter trained from one of them, given on
    top of this folder, does not bring it again (`adapter_chain.stacked`)."""
    import copy

    folder = Path(out_dir) / "merged"
    merged = copy.deepcopy(model).merge_and_unload()
    merged.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    if adapters:
        write_merged_record(folder, base, adapters)
    return folder
