"""Under DDP (`accelerate launch`, several processes) the VLM policy's gradients are averaged.

The scorer runs the language model inside the DistributedDataParallel wrapper directly, which
never armed DDP's reducer: no all-reduce happened, every process stepped on its own half-batch
gradient and the replicas drifted apart (two CPU processes at batch 2 against one at batch 4:
losses 0.669 / 0.670 at step 2, 0.375 / 0.437 at step 4; with the fix they agree to 2e-7). Here
a one-process gloo group and a communication hook show whether the backward all-reduces.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from vlm_helpers import pair_rows

from mmalign.train.config import LoraConfig
from mmalign.vlm.collate import PairCollator
from mmalign.vlm.load import load_vlm
from mmalign.vlm.lora import add_lora
from mmalign.vlm.scorer import VLMPairScorer


@pytest.fixture
def process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_policy_backward_all_reduces_under_ddp(process_group):
    vlm = load_vlm("toy:vlm")
    torch.manual_seed(0)
    model = add_lora(vlm.model, LoraConfig(rank=4)).train()
    batch = PairCollator(vlm.processor, ("main",))(pair_rows())
    params = [p for p in model.parameters() if p.requires_grad]
    scorer = VLMPairScorer(model, "adapters")
    out = scorer(model, batch, with_reference=True)["main"]
    expected = torch.autograd.grad((out.chosen - out.rejected).sum(), params)

    ddp = torch.nn.parallel.DistributedDataParallel(model)
    reduced = []

    def hook(state, bucket):  # what DDP runs to all-reduce a bucket of gradients
        reduced.append(bucket.index())
        fut = torch.futures.Future()
        fut.set_result(bucket.buffer())
        return fut

    ddp.register_comm_hook(None, hook)
    out = scorer(ddp, batch, with_reference=True)["main"]
    assert out.ref_chosen is not None
    (out.chosen - out.rejected).sum().backward()
    assert reduced, "the backward never reached DDP's all-reduce"
    for p, g in zip(params, expected, strict=True):
        assert p.grad is not None and torch.allclose(p.grad, g, atol=1e-6)
    assert "forward" not in model.__dict__  # the wrapped module's own forward is back
