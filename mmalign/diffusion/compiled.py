"""`diffusion.compile`: the training step's denoiser calls through `torch.compile`.

The step calls the policy (as the train loop prepared it, maybe DDP-wrapped, so gradients are
still reduced) and the unwrapped module for the reference (adapters off). Each gets a compiled
view made once and kept: an `OptimizedModule` that shares the module's parameters, so the
optimizer, checkpoints and saved LoRA see the same tensors and keys as without it. Sampling
(`validate`, evaluation) calls the pipeline's own module and stays eager, so it never compiles
for the pipeline's other batch shapes.

Switching the adapters off for the reference flips a flag on each LoRA layer that the compiled
code guards on: the first steps compile the policy (with gradient) and the reference (without)
once each, and the later ones reuse both. A last, smaller batch compiles once more.
"""

from __future__ import annotations

from typing import Any

import torch


class CompiledViews:
    """`views(module)`: the module itself when off, else its compiled view (made on first use,
    then the same object for the same module)."""

    def __init__(self, enabled: bool, **options: Any) -> None:
        self.enabled = enabled
        self.options = options
        self._views: dict[int, tuple[torch.nn.Module, torch.nn.Module]] = {}

    def __call__(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self.enabled:
            return module
        hit = self._views.get(id(module))
        if hit is None or hit[0] is not module:  # an id reused by a new object: compile anew
            hit = (module, torch.compile(module, **self.options))
            self._views[id(module)] = hit
        return hit[1]
