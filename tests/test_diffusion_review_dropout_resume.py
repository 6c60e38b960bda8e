"""LoRA dropout draws its masks from the step's seed: a resumed run continues exactly.

The masks came from the global generator, which a checkpoint does not hold, so with
`lora.dropout` > 0 a run resumed from checkpoint 3 logged other losses at steps 4-6.
"""

from __future__ import annotations

import shutil

import torch
from diffusion_helpers import read_metrics, save_tiny, tiny_config

from mmalign.diffusion.passes import seeded_dropout


def test_seeded_dropout_repeats_its_masks_and_restores_the_generator():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    with seeded_dropout(torch.tensor([7, 8]), torch.device("cpu")):
        a = torch.rand(5)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's stream is untouched
    torch.rand(3)  # whatever ran in between
    with seeded_dropout(torch.tensor([7, 9]), torch.device("cpu")):
        b = torch.rand(5)
    with seeded_dropout(torch.tensor([8]), torch.device("cpu")):
        c = torch.rand(5)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_resume_is_exact_with_lora_dropout(tmp_path):
    from mmalign.diffusion.recipe import DiffusionRecipe
    from mmalign.train.loop import train

    tiny = save_tiny(tmp_path)
    lora = {"rank": 4, "dropout": 0.5}
    full = tmp_path / "full"
    train(tiny_config(tiny, full, lora=lora), DiffusionRecipe)
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "checkpoint-3", part / "checkpoints" / "checkpoint-3")
    train(tiny_config(tiny, part, lora=lora, train={"resume_from": "latest"}), DiffusionRecipe)
    a = {m["step"]: m["loss"] for m in read_metrics(full)}
    b = {m["step"]: m["loss"] for m in read_metrics(part)}
    assert sorted(b) == [4, 5, 6]
    for step in (4, 5, 6):
        assert abs(a[step] - b[step]) <= 1e-6, (step, a[step], b[step])


def test_flow_scores_with_lora_dropout_depend_on_the_seeds_alone():
    from flow_helpers import empty_text, encoded_batch, tiny_flow

    from mmalign.diffusion.flow import FlowPairScorer
    from mmalign.diffusion.flow_lora import add_flow_lora
    from mmalign.train import LoraConfig

    model = tiny_flow("sd3")
    add_flow_lora(model.transformer, "sd3", LoraConfig(rank=4, dropout=0.5))
    for name, p in model.transformer.named_parameters():
        if "lora_B" in name:
            p.data.fill_(0.05)  # LoRA off the identity, so its dropout shows in the scores
    model.transformer.train()
    scorer = FlowPairScorer(model, empty_text(model), reference="none", caption_dropout=0.0)
    scorer.seed_dropout = True  # the recipes set it when lora.dropout > 0
    batch, seeds = encoded_batch(model), torch.tensor([11, 12, 13])
    with torch.no_grad():
        torch.manual_seed(1)
        a = scorer(model.transformer, batch, seeds, with_reference=False)["main"]
        torch.manual_seed(2)
        b = scorer(model.transformer, batch, seeds, with_reference=False)["main"]
        c = scorer(model.transformer, batch, seeds + 1, with_reference=False)["main"]
    torch.testing.assert_close(a.chosen, b.chosen, rtol=0, atol=0)
    torch.testing.assert_close(a.rejected, b.rejected, rtol=0, atol=0)
    assert not torch.equal(a.chosen, c.chosen)
