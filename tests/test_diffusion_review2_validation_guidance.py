"""Validation samples at the model's own guidance unless `validation.guidance` is set.

The default was a fixed 5.0: FLUX.1-dev's embedded guidance (trained at `diffusion.guidance`,
3.5) was validated at 5.0, SD3 at 5.0 instead of its 7.0, toy-sd at 5.0 instead of its card's
2.5, while docs/diffusion.md said validation samples as `mmalign sample` does."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mmalign.diffusion.recipe_base import PairRecipeBase
from mmalign.train.config import ValidationConfig


@pytest.mark.parametrize(
    ("family", "set_to", "want"),
    [("flux", None, 3.5), ("sd3", None, 7.0), ("sdxl", None, 5.0), ("sd", None, 7.5),
     ("flux", 2.0, 2.0), ("sd", 1.0, 1.0)],
)  # fmt: skip
def test_validation_guidance_is_the_models_unless_set(family, set_to, want):
    assert ValidationConfig().guidance is None
    recipe = SimpleNamespace(
        cfg=SimpleNamespace(validation=ValidationConfig(guidance=set_to)),
        diffusion=SimpleNamespace(family=family, source="org/model"),
    )
    assert PairRecipeBase.validation_guidance(recipe) == want  # type: ignore[arg-type]
