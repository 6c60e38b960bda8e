"""The denoiser modules a diffusion training step calls, unwrapped once and, with
`diffusion.compile`, called through `torch.compile`.

The step calls the policy (as the train loop prepared it, maybe DDP-wrapped: DDP's gradient
hooks run outside the compiled region, so gradients are still reduced; not tested here, no
multi-process run compiles in the suite), the unwrapped module
for the reference with the LoRA adapters off, and, for a full fine-tune, the frozen reference
copy. Each gets a compiled view made once and kept: an `OptimizedModule` that shares the
module's parameters, so the optimizer, checkpoints and saved LoRA see the same tensors as
without it (the recipes save from the module itself: a view's `state_dict` keys carry an
`_orig_mod.` prefix). Sampling (`validate`, evaluation) calls the pipeline's own module and
stays eager, so it never compiles for the pipeline's other batch shapes.

Switching the adapters off for the reference flips a flag on each LoRA layer that the compiled
code guards on: the first steps compile the policy (with gradient) and the reference (without)
once each, and the later ones reuse both (every micro-batch has the same shape). SmPO's ReNoise
inversion calls the base with fewer rows as its steps go on, which compiles a few more graphs.
"""

from __future__ import annotations

from typing import Any

import torch


class CompiledViews:
    """`views(module)`: the module itself when off, else its compiled view, made on first use
    and then the same object for that module. `options` go to `torch.compile` (the tests pass a
    recording backend)."""

    def __init__(self, enabled: bool, **options: Any) -> None:
        self.enabled = enabled
        self.options = options
        # keyed by the module (hashed by identity) and holding it, so a view's identity is
        # stable for as long as the run: AdapterSwitch remembers layers by the view's id()
        self._views: dict[torch.nn.Module, torch.nn.Module] = {}

    def __call__(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self.enabled:
            return module
        view = self._views.get(module)
        if view is None:
            view = self._views[module] = torch.compile(module, **self.options)
        return view


class StepModules:
    """`modules(model)` -> (policy, base) as the step calls them: the model the train loop
    prepared and its unwrapped module (for the reference, so no DDP hooks fire), each through
    `views`. The unwrapping is done once per model: accelerate's `unwrap_model` walks every
    module looking for compiled regions on each call (about 2.5 ms per step on the tiny UNet)."""

    def __init__(self, accelerator: Any, views: CompiledViews) -> None:
        self.accelerator = accelerator
        self.views = views
        self._unwrapped: tuple[torch.nn.Module, torch.nn.Module] | None = None
        if views.enabled and accelerator.is_main_process:  # or the first step looks hung
            print(
                "mmalign: diffusion.compile: the first steps compile the denoiser (one to two "
                "minutes on a CPU for a tiny model; the kernels are cached on disk for later runs)"
            )

    def __call__(self, model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
        if self._unwrapped is None or self._unwrapped[0] is not model:
            self._unwrapped = (model, self.accelerator.unwrap_model(model))
        return self.views(model), self.views(self._unwrapped[1])
