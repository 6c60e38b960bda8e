"""The policy and reference passes of a pair score, in the order that keeps memory low.

Every diffusion scorer (DDPM, flow, PPD) scores a pair batch twice: the policy with gradient
and, when the objective needs one, the reference without. The reference runs first: its
activations are freed before the policy's (kept for backward) exist, so the peak is the larger
of the two passes, not their sum (diffusers' Diffusion-DPO script runs it after). Nothing is
drawn between the passes, so the numbers are those of either order (a base model with active
dropout would shift its masks).

With `lora.dropout` > 0 the policy pass runs under a forked RNG seeded from the batch's first
pair seed (salted): LoRA dropout draws its masks from the global generator, which a checkpoint
does not hold, so without the seed a resumed run drew other masks and lost the exact
continuation every other draw of the step keeps. (The scorers run SmPO's ReNoise inversion, a
policy pass too, under the same seeding.) A mask covers one process's batch, so with dropout
two processes at batch b draw other masks than one process at 2b: such a run resumes exactly,
but is not the one-process run (without dropout it is, within rounding).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..losses import PairScores

DROPOUT_SALT = 0x2545F4914F6CDD1D  # the policy pass's dropout: its own stream beside the draws


@contextlib.contextmanager
def seeded_dropout(seeds: torch.Tensor | None, device: torch.device) -> Iterator[None]:
    """The global generators (CPU and `device`'s) seeded from `seeds[0]` for the block, and
    restored after it: dropout masks become a function of the step, as every other draw."""
    if seeds is None or len(seeds) == 0:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed((int(seeds[0]) + DROPOUT_SALT) % (2**62))
        yield


def policy_and_reference(
    mse: Callable[[Any], torch.Tensor],
    policy: Any,
    reference: contextlib.AbstractContextManager[Any] | None,
    seeds: torch.Tensor | None = None,
) -> PairScores:
    """`mse(net)` -> [2, B] per-pair errors (chosen row, rejected row); `reference`: a context
    that yields the reference network (None: no reference pass); `seeds`: the pair seeds, which
    fix the policy pass's dropout masks. Scores are `-mse`."""
    ref = None
    if reference is not None:
        with torch.no_grad(), reference as net:
            ref = mse(net)
    if seeds is None:  # no dropout to seed: no RNG fork, no device lookup on the step
        err = mse(policy)
    else:
        with seeded_dropout(seeds, next(policy.parameters()).device):
            err = mse(policy)
    scores = PairScores(chosen=-err[0], rejected=-err[1])
    if ref is not None:
        scores.ref_chosen, scores.ref_rejected = -ref[0], -ref[1]
    return scores
