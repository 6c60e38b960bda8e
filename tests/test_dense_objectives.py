"""Issue 21, item 3: `diffusion.dense` works with dpo, mapo and smpo (ReNoise trajectory and
soft labels included). The weights reach every objective's loss: on toy:flaws pairs (flawed
rejected images), weighting both sides raises the first step's rejected score (fewer error cells
count) against the same run without them, same seeds, and leaves the clean chosen images'
score as it was."""

from __future__ import annotations

import json

import pytest
from diffusion_helpers import save_tiny, tiny_config

OBJECTIVES = {
    "dpo": ({"loss": "dpo", "beta": 500.0}, {}, {}),
    "mapo": ({"loss": "mapo", "beta": 10.0}, {}, {}),
    "smpo": (
        {"loss": "smpo", "beta": 500.0, "gamma": 10.0},
        {"smooth": {"scorer": "toy:fidelity"}},
        {"trajectory": "renoise", "renoise": {"steps": 2, "iterations": 1}},
    ),
}


def first_scores(tmp_path, name: str, dense: bool) -> tuple[float, float]:
    from mmalign.diffusion.recipe import DiffusionRecipe
    from mmalign.train.loop import train

    objective, data, diffusion = OBJECTIVES[name]
    run = tmp_path / f"{name}-{dense}"
    if dense:
        diffusion = {**diffusion, "dense": {"scorer": "toy:flaws", "map": "artifact",
                                            "sides": "both"}}  # fmt: skip
    cfg = tiny_config(
        save_tiny(tmp_path), run, objective=[objective],
        data={"path": "toy:flaws", "toy": {"n": 8}, **data},
        train={"max_steps": 1, "checkpoint_every": 1}, diffusion=diffusion,
    )  # fmt: skip
    train(cfg, DiffusionRecipe)
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    return first["main/score_chosen"], first["main/score_rejected"]


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_dense_weights_reach_each_objective(tmp_path, name):
    plain, weighted = first_scores(tmp_path, name, False), first_scores(tmp_path, name, True)
    # the flawed rejected images' cells count less: their (negative) score moves towards 0
    assert weighted[1] > plain[1]
    assert weighted[0] == pytest.approx(plain[0], rel=1e-5)  # clean chosen renders: weight 1
