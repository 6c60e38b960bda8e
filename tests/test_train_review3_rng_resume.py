"""A resumed run continues the global random streams of an unbroken one.

The loop seeds the data order and the recipe's per-pair draws from the step, but a VLM LoRA's
dropout (peft's `nn.Dropout`) draws its masks from torch's global generator, which a
checkpoint did not hold: a run resumed from checkpoint 2 with `lora.dropout: 0.5` logged other
losses at steps 3-4 than the unbroken run.
"""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
import torch
from test_vlm_train import losses, vlm_config

from mmalign.train.loop import train
from mmalign.vlm.recipe import VLMRecipe


def test_vlm_resume_is_exact_with_lora_dropout(tmp_path):
    lora = {"rank": 4, "dropout": 0.5}
    full = tmp_path / "full"
    train(vlm_config(full, lora=lora), VLMRecipe)
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    src = full / "checkpoints" / "checkpoint-2"
    shutil.copytree(src, part / "checkpoints" / "checkpoint-2")
    train(vlm_config(part, lora=lora, train={"resume_from": "latest"}), VLMRecipe)
    assert losses(part) == pytest.approx(losses(full)[2:], abs=1e-6)


def test_random_states_survive_a_weights_only_load(tmp_path):
    from mmalign.train.checkpoint import rng_state, set_rng_state

    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    torch.save([rng_state()], tmp_path / "rng.pt")
    expect = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(4)
    np.random.seed(4)
    random.seed(4)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)[0])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expect[0], got[0])
    assert np.array_equal(expect[1], got[1]) and expect[2] == got[2]
