"""Which rows of a data set a run reads, known before it starts.

The loop's `StepBatches` reads position p of the run's stream of pairs from row `perm_e[p % n]`
(epoch e = p // n, each epoch a permutation seeded by (seed, e)), and a run of `max_steps`
steps reads positions 0 .. max_steps x global batch - 1, the global batch being
`batch_size x gradient_accumulation_steps x processes`. A run shorter than one epoch therefore
reads the first `max_steps x global batch` rows of the seed's first permutation, and no other:
the pre-encoding cache (`diffusion.precompute`, diffusion/encode.py) encodes only those (SDXL
on Pick-a-Pic v2: 64k of ~850k pairs). A resumed run reads a part of the same rows.
"""

from __future__ import annotations

import torch

from .loop import StepBatches


def rows_read(
    n: int, *, max_steps: int, batch_size: int, accumulation: int, world: int, seed: int
) -> list[int] | None:
    """The sorted rows of an `n`-row data set a run reads in `max_steps` steps, or None when it
    reads every row (an epoch or more). Drawn by the loop's own sampler, so the two agree."""
    total = max_steps * batch_size * accumulation * world
    if total >= n:
        return None
    batches = StepBatches(n, batch_size, accumulation, world, 0, seed)
    return sorted(set(batches.rows(torch.arange(total))))
