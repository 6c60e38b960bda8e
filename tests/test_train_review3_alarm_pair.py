"""The displacement alarm of a VLM run watches a pair the objective scores.

It always read the `main` pair; the VLM scorer produces only the pairs of the objective, so a
reference-free objective on another pair (`[{pair: visual, loss: simpo}]`, mDPO's image
preference alone) stopped at step 1 with `KeyError: 'main/score_chosen'` while taking the
alarm's baseline.
"""

from __future__ import annotations

import json

from test_vlm_train import vlm_config

from mmalign.train.loop import ALARM_START, train
from mmalign.vlm.recipe import VLMRecipe


def test_a_reference_free_objective_without_the_main_pair_trains(tmp_path):
    out = tmp_path / "run"
    cfg = vlm_config(out, data={"path": "toy:hallucination", "toy": {"n": 24}},
                     objective=[{"pair": "visual", "loss": "simpo"}],
                     train={"max_steps": 2})  # fmt: skip
    result = train(cfg, VLMRecipe)
    assert result.steps == 2
    saved = set(json.loads((out / ALARM_START).read_text()))
    assert saved == {"version", "step", "score_chosen", "score_rejected"}
    assert "displacement/chosen" in result.final_metrics
    assert "visual/score_chosen" in result.final_metrics
