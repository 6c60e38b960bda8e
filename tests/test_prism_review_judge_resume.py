"""PRISM's search resume check: a VLM judge is named by its folder, so its weights are part
of the settings too; a judge retrained in place must not resume trees it never scored."""

from __future__ import annotations

import time

import pytest
import torch
from test_prism_mcts import FakeGenerator, FakeJudge, rows

from mmalign.config import InputError
from mmalign.vlm.load import load_vlm
from mmalign.vlm.prism.judges import make_judge
from mmalign.vlm.prism.mcts import MCTSConfig
from mmalign.vlm.prism.search import Search


def _search(judge, out) -> Search:
    return Search(rows(2), FakeGenerator(), judge, MCTSConfig(iterations=3), out, progress=False)


def test_a_judge_retrained_in_place_does_not_resume(tmp_path):
    folder = tmp_path / "judge"
    vlm = load_vlm("toy:vlm")
    vlm.model.save_pretrained(folder)
    vlm.processor.save_pretrained(folder)
    _search(make_judge(f"vlm:{folder}"), tmp_path / "out")._checksettings()  # search.json
    time.sleep(0.01)
    with torch.no_grad():
        for p in vlm.model.parameters():
            p.mul_(0.5)
    vlm.model.save_pretrained(folder)  # same path, other weights
    again = _search(make_judge(f"vlm:{folder}"), tmp_path / "out")
    with pytest.raises(InputError, match="judge_weights"):
        again._checksettings()


def test_judges_without_weights_record_no_judge_weights(tmp_path):
    assert "judge_weights" not in _search(FakeJudge(), tmp_path).settings()
