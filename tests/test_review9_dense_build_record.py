"""The dense reward recipe says and records what its toy build left out (flaws no pixel
shows: `no_visible_flaw`), as the preference recipes do (`build_skipped`); before, the rows
were dropped with no line printed and nothing in mmalign_run.json."""

from __future__ import annotations

import json
from pathlib import Path

from mmalign.cli import main
from mmalign.toy.build_record import toy_build

ROOT = Path(__file__).resolve().parents[1]


def test_dense_reward_run_records_the_build_left_out(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = [
        "train", str(ROOT / "configs/toy/dense_reward.yaml"), "data.toy.n=64",
        "train.max_steps=1", "train.batch_size=4", "reward.dim=16", "reward.heads=2",
        "reward.depth=1", f"output_dir={out}",
    ]  # fmt: skip
    assert main(args) == 0
    built = toy_build("toy:flaws", toy_options={"n": 64})
    assert built is not None and built.skipped.get("no_visible_flaw", 0) > 0  # seed 0: 2 of 64
    record = json.loads((out / "mmalign_run.json").read_text())
    assert record["build_skipped"] == built.skipped
    assert "building toy:flaws left out" in capsys.readouterr().out
