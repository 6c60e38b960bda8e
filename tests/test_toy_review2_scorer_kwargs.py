"""The toy scorers take the keyword arguments every scorer is given (`device`, `dtype`,
`batch_size`) and ignore them: they have no weights to place. `data.smooth: {scorer:
toy:fidelity, device: cpu}` (SmPO soft labels, diffusion/smooth.py) passes a device to whatever
scorer it names, and crashed with a TypeError. An argument a toy scorer does not take
(`toy:fidelity:x`) is told so by name instead of "ToyFidelity() takes no arguments"."""

from __future__ import annotations

import pytest
import torch

from mmalign.rewards import get_scorer
from mmalign.toy.render import render_batch

PROMPT = "a red circle on a blue background"
NAMES = ["toy:fidelity", "toy:flaws", "toy:style:outlined", "toy:user:warm", "toy:user:t03"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "kwargs", [{"device": "cpu"}, {"device": "cuda", "dtype": "float16"}, {"batch_size": 8}]
)
def test_a_toy_scorer_takes_the_common_keyword_arguments(name, kwargs):
    images = render_batch([PROMPT, "a blue square on a red background"])
    plain = get_scorer(name).score(images, [PROMPT, PROMPT])
    scored = get_scorer(name, **kwargs).score(images, [PROMPT, PROMPT])
    assert torch.equal(scored, plain)  # ignored: the same scores on the images' own device


def test_smpo_soft_labels_build_a_toy_scorer_with_a_device():
    from mmalign.diffusion.smooth import _scorer

    scorer = _scorer("toy:fidelity", "cpu")
    assert float(scorer.score(render_batch([PROMPT]), [PROMPT])[0]) > 0.95


@pytest.mark.parametrize("name", ["toy:fidelity:x", "toy:flaws:overall"])
def test_an_argument_a_toy_scorer_does_not_take_is_named(name):
    base = name.rpartition(":")[0]
    with pytest.raises(ValueError, match=f"{base} takes no argument, got '{name}'; use '{base}'"):
        get_scorer(name)
