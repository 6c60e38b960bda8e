"""`mmalign data realign` and `data prism-mcts` read `toy:<kind>` whatever `--split` said
(toy data is built, not split): refused now through `toy.cache.split_to_read`, before any
model loads; without `--split` they read the built rows as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from device_helpers import Stop, recorder

from mmalign.cli import main
from mmalign.words import plural

REFUSED = "--split test: toy data is built, not split"


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "realign", "--model", "toy:vlm", "--data", "toy:vqa", "--out", "{tmp}/o"],
        ["data", "prism-mcts", "--model", "toy:vlm", "--data", "toy:prism", "--out", "{tmp}/o"],
    ],
)
def test_a_split_for_toy_data_is_refused_before_loading(argv, tmp_path: Path, monkeypatch, capsys):
    import mmalign.vlm.data

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.vlm.data, "open_vlm_pairs", recorder(calls))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main([*argv, "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert REFUSED in err and "Traceback" not in err
    assert calls == []


def test_realign_reads_the_built_rows_without_split(tmp_path: Path, monkeypatch):
    import mmalign.vlm.data
    import mmalign.vlm.load

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.vlm.load, "load_vlm", lambda *a, **k: None)
    monkeypatch.setattr(mmalign.vlm.data, "open_vlm_pairs", recorder(calls))
    with pytest.raises(Stop):
        main(["data", "realign", "--model", "toy:vlm", "--data", "toy:vqa", "--out",
              str(tmp_path / "o")])  # fmt: skip
    assert calls[0]["args"][:2] == ("toy:vqa", "train")


def test_prism_summary_line_counts_in_words():
    from mmalign.vlm.prism.cli import summary_line

    this = {"nodes_per_second": 1, "samples_per_second": 1, "judge_calls_per_second": 1}
    line = summary_line({"trees": 1, "trees_loaded": 0, "nodes": 1, "pairs": 1, "failures": 0,
                         "this_run": this})  # fmt: skip
    assert line.startswith(f"prism-mcts: {plural(1, 'tree')} (0 resumed), 1 node, 1 pair;")
