"""Batch statistics over every training process: KTO's reference point.

A loss sees one process's share of the step's batch. A statistic a loss takes from the batch
itself (the reference point z of `kto` and `diffusion_kto`) must be one value for the whole
global batch, the same on every process, as TRL's KTOTrainer and the Diffusion-KTO authors
take it (gathered over the processes, then averaged). The training loop calls the objective
inside `across_processes(all_sum)`, where `all_sum` sums a tensor over the processes (an
all-reduce); elsewhere (eval, tests) a statistic is this process's batch alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
from torch import Tensor

AllSum = Callable[[Tensor], Tensor]

_ALL_SUM: ContextVar[AllSum | None] = ContextVar("mmalign_all_sum", default=None)


@contextlib.contextmanager
def across_processes(all_sum: AllSum) -> Iterator[None]:
    """Within the block, `batch_mean` is the mean over every process's values.

    `all_sum(t)` must return the element-wise sum of `t` over the processes (every process
    holding a tensor of the same shape), and every process must call the losses alike: the
    sum is a collective operation.
    """
    token = _ALL_SUM.set(all_sum)
    try:
        yield
    finally:
        _ALL_SUM.reset(token)


def batch_mean(x: Tensor) -> Tensor:
    """The detached mean of `x`: over the union of every process's values inside
    `across_processes` (processes may hold different counts), else over this process's."""
    x = x.detach()
    all_sum = _ALL_SUM.get()
    if all_sum is None:
        return x.mean()
    # float32 for the sum and the count: a bf16 count is exact only up to 256
    count = torch.tensor(float(x.numel()), device=x.device)
    total, count = all_sum(torch.stack([x.float().sum(), count])).unbind()
    return (total / count).to(x.dtype)
