"""Hard labels reach the diffusion losses: a label 0 (the rejected image won) is not dropped.

`label` is P(chosen is preferred). The recipes passed labels to the loss only when some lay
strictly between 0 and 1, so data whose labels were all 0 or 1 trained every label-0 pair with
chosen and rejected the wrong way round.
"""

from __future__ import annotations

import torch
from datasets import Dataset
from diffusion_helpers import save_tiny, tiny_config
from PIL import Image

from mmalign.data.schema import write_pairs
from mmalign.diffusion.data import has_soft_labels
from mmalign.losses import LOSSES, PairScores


def test_a_hard_label_zero_counts_as_a_label():
    assert has_soft_labels(Dataset.from_dict({"label": [1.0, 0.0]}))
    assert has_soft_labels(Dataset.from_dict({"label": [1.0, 0.5]}))
    assert not has_soft_labels(Dataset.from_dict({"label": [1.0, None, 1.0]}))
    assert not has_soft_labels(Dataset.from_dict({"prompt": ["a"]}))


def test_label_zero_trains_the_pair_the_other_way_round():
    s = PairScores(chosen=torch.tensor([-1.0]), rejected=torch.tensor([-1.2]),
                   ref_chosen=torch.tensor([-1.1]), ref_rejected=torch.tensor([-1.1]),
                   label=torch.tensor([0.0]))  # fmt: skip
    swapped = s.swapped()  # label 1: the rejected image is the winner
    for loss in ("dpo", "smpo"):
        torch.testing.assert_close(
            LOSSES[loss](s, beta=5.0).loss, LOSSES[loss](swapped, beta=5.0).loss
        )


def test_the_recipe_passes_hard_labels_to_the_loss(tmp_path):
    from accelerate import Accelerator

    from mmalign.diffusion.recipe import DiffusionRecipe

    colours = ["red", "blue", "green", "white"]
    rows = [
        {"prompt": f"a {c} square", "chosen": Image.new("RGB", (32, 32), c),
         "rejected": Image.new("RGB", (32, 32), "black"), "label": float(i % 2 == 0)}
        for i, c in enumerate(colours)
    ]  # fmt: skip
    write_pairs(rows, tmp_path / "pairs", "image")
    cfg = tiny_config(
        save_tiny(tmp_path), tmp_path / "out", data={"path": str(tmp_path / "pairs"), "toy": None}
    )
    recipe = DiffusionRecipe(cfg, Accelerator(cpu=True))
    assert recipe.scorer.use_labels
    batch = recipe.collate([recipe.dataset[i] for i in range(4)])
    batch = recipe.to_device(batch, [0, 1, 2, 3], torch.device("cpu"))
    with torch.no_grad():
        scores = recipe.score(recipe.model, batch, torch.arange(4), with_reference=True)["main"]
    assert scores.label.tolist() == [1.0, 0.0, 1.0, 0.0]
    # a loss that ignores labels would train the label-0 rows backwards: a clear error
    from mmalign.config import ConfigError

    mapo = tiny_config(
        save_tiny(tmp_path / "m"), tmp_path / "out-mapo",
        data={"path": str(tmp_path / "pairs"), "toy": None},
        objective=[{"pair": "main", "loss": "mapo", "beta": 0.1}],
    )  # fmt: skip
    try:
        DiffusionRecipe(mapo, Accelerator(cpu=True))
    except ConfigError as err:
        assert "2 of 4 rows have label 0" in str(err) and "mapo" in str(err)
    else:
        raise AssertionError("mapo on label-0 rows was not refused")
