"""Dropout in VLM preference training: turned off in the model (`vlm.disable_dropout`, on by
default, as TRL's `DPOConfig.disable_dropout`), and never sampled in a reference pass.

DPO's loss reads the policy's log-ratio to the reference (Rafailov et al. 2023, Eq. 7): with
dropout on, both log-probs are noisy, the margin is not zero at step 0, and under
`vlm.reference: adapters` (the policy with its LoRA off, scored while the model is in train
mode) the reference itself differs from call to call.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch

DROPOUT_MODULES = (
    torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d,
    torch.nn.AlphaDropout, torch.nn.FeatureAlphaDropout,
)  # fmt: skip


def disable_dropout(model: torch.nn.Module) -> int:
    """Set every dropout rate of `model` to 0; the number of rates that were above 0.

    TRL's `disable_dropout_in_model` sets `p = 0` on each `nn.Dropout` module. transformers'
    attention layers draw theirs from a float attribute instead (Llama's, Qwen2's and
    Idefics3's text `attention_dropout`, CLIP's and SigLIP's `dropout`, read as
    `0.0 if not self.training else self.attention_dropout`), which that leaves on: here every
    float attribute of a module whose name holds "drop" is zeroed too. The model's config is
    left as it is, so a saved model keeps the rates it was loaded with.

    TRL calls it after `get_peft_model`, so PEFT's `lora_dropout` modules are zeroed too; the
    VLM recipe calls it before LoRA is added, so `lora.dropout` (0 unless set) keeps the rate
    the config asks for: an explicit setting of the run, not a rate the checkpoint carried."""
    zeroed = 0
    for module in model.modules():
        if isinstance(module, DROPOUT_MODULES):
            zeroed += module.p > 0
            module.p = 0.0
            continue
        for name, value in vars(module).items():
            if "drop" in name and type(value) is float and value > 0:
                setattr(module, name, 0.0)
                zeroed += 1
    return int(zeroed)


_MODULES: weakref.WeakKeyDictionary[torch.nn.Module, tuple[torch.nn.Module, ...]] = (
    weakref.WeakKeyDictionary()
)


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """`model` in eval mode (no dropout sampled), each module's own mode restored after: a
    reference pass inside a training step scores the reference model, never a noisy sample
    of it, whatever `vlm.disable_dropout` says.

    Called on every reference pass: the module list is walked once per model and kept (a
    7B LLaVA with LoRA has ~3000 modules; three `modules()` walks a call cost ~20 ms), and
    only the modules in training mode are switched and switched back."""
    modules = _MODULES.get(model)
    if modules is None:
        modules = _MODULES[model] = tuple(model.modules())
    switched = [m for m in modules if m.training]
    for module in switched:
        module.training = False
    try:
        yield
    finally:
        for module in switched:
            module.training = True
