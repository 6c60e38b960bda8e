"""Turning PEFT adapters off for a reference pass, cheaply.

Both scorers get the reference from the policy with its adapters disabled. PEFT's and
diffusers' own switches (`PeftModel.disable_adapter()`, `ModelMixin.disable_adapters()`) walk
every module of the model on each call, and PEFT's also builds a status report
(`get_model_status`): 4-7 ms of a 97 ms toy-vlm DPO step at batch 8 on this CPU. Here the
adapter layers are found once per run and toggled directly. With autograd on, the per-layer
call is PEFT's own (`BaseTunerLayer.enable_adapters`, which also sets requires_grad on the
adapter weights and back). Under `torch.no_grad()`, where requires_grad changes nothing, only
the flag the layers' forward reads (`disable_adapters`) is flipped: 3 ms of a 100 ms step on
the tiny SD1.5 UNet of benchmarks/diffusion_vs_diffusers.py went to the requires_grad walk.
Whether the flag works is checked once per layer list (a PEFT that renamed it would otherwise
leave the adapters on in the reference); if not, PEFT's call is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def adapter_layers(model: Any) -> list[Any]:
    """The PEFT adapter layers (LoRA, LoHa, ...) of `model` (DDP-unwrapped)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    root = getattr(model, "module", model)
    return [m for m in root.modules() if isinstance(m, BaseTunerLayer)]


def flag_switches(layers: list[Any]) -> bool:
    """Whether setting `_disable_adapters` turns each layer's `disable_adapters` on and off
    (PEFT's forward reads that property); every layer is left as it was."""
    for layer in layers:
        before = getattr(layer, "_disable_adapters", None)
        if not isinstance(before, bool) or before:
            return False
        layer._disable_adapters = True
        works = layer.disable_adapters is True
        layer._disable_adapters = False
        if not works or layer.disable_adapters is not False:
            return False
    return True


@contextlib.contextmanager
def adapters_disabled(layers: list[Any], flag_only: bool = False) -> Iterator[None]:
    """Run the model without its adapters inside the block; they are back on after it.
    `flag_only` (only under no_grad, and only if `flag_switches(layers)`): flip the flag alone."""
    if not layers:
        raise ValueError("no adapter layers to disable: the reference needs a LoRA model")
    if flag_only and not torch.is_grad_enabled():
        for layer in layers:
            layer._disable_adapters = True
        try:
            yield
        finally:
            for layer in layers:
                layer._disable_adapters = False
        return
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


class AdapterSwitch:
    """Remembers each model's adapter layers (by identity) across the steps of a run."""

    def __init__(self) -> None:
        self._layers: dict[int, tuple[list[Any], bool]] = {}

    def off(self, model: Any) -> contextlib.AbstractContextManager[None]:
        key = id(model)
        if key not in self._layers:
            layers = adapter_layers(model)
            self._layers[key] = (layers, flag_switches(layers))
        layers, flag_only = self._layers[key]
        return adapters_disabled(layers, flag_only)
