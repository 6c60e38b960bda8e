"""The policy and reference passes of a pair score, in the order that keeps memory low.

Every diffusion scorer (DDPM, flow, PPD) scores a pair batch twice: the policy with gradient
and, when the objective needs one, the reference without. The reference runs first: its
activations are freed before the policy's (kept for backward) exist, so the peak is the larger
of the two passes, not their sum (diffusers' Diffusion-DPO script runs it after). Nothing is
drawn between the passes, so the numbers are those of either order (a base model with active
dropout would shift its masks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from ..losses import PairScores


def policy_and_reference(
    mse: Callable[[Any], torch.Tensor],
    policy: Any,
    reference: contextlib.AbstractContextManager[Any] | None,
) -> PairScores:
    """`mse(net)` -> [2, B] per-pair errors (chosen row, rejected row); `reference`: a context
    that yields the reference network (None: no reference pass). Scores are `-mse`."""
    ref = None
    if reference is not None:
        with torch.no_grad(), reference as net:
            ref = mse(net)
    err = mse(policy)
    scores = PairScores(chosen=-err[0], rejected=-err[1])
    if ref is not None:
        scores.ref_chosen, scores.ref_rejected = -ref[0], -ref[1]
    return scores
