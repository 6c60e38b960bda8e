"""`mmalign eval vlm --n N` counts every item drawn that no rate counts, with its reason.

Before: the hallucination builder drops the questions no near-identical image can answer
otherwise (`no_similar_image`, about a third of them), and the results said `n` (the rows
left) and nothing else: `--n 300` reported rates over 188 rows, with no word of the 112
others. Now `asked`, `n` (scored) and `dropped` (reason -> count) are in the results JSON and a
line is printed naming them."""

from __future__ import annotations

import json

import pytest

from mmalign.cli import main
from mmalign.vlm.evaluate import evaluate_toy, heldout_build
from mmalign.vlm.rates import dropped_line

N, SEED = 24, 4321


@pytest.fixture(scope="module")
def toy_vlm():
    from mmalign.vlm.load import load_vlm

    return load_vlm("toy:vlm")


def test_the_builder_s_drops_are_counted_by_reason():
    rows, dropped = heldout_build("hallucination", N, SEED)
    assert dropped.get("no_similar_image", 0) > 0
    assert len(rows) + sum(dropped.values()) == N


def test_hallucination_results_count_and_print_the_dropped_items(toy_vlm, capsys):
    results = evaluate_toy(toy_vlm, "hallucination", n=N, seed=SEED)
    lost = results["dropped"]["no_similar_image"]
    assert lost > 0 and results["asked"] == N
    assert results["n"] == results["accuracy_n"] == N - lost
    line = f"{lost} of {N} items drawn dropped, rates over {N - lost}: no_similar_image {lost}"
    assert line in capsys.readouterr().out


def test_safety_reports_that_none_was_dropped(toy_vlm, capsys):
    results = evaluate_toy(toy_vlm, "safety", n=8, seed=SEED)
    assert (results["asked"], results["n"], results["dropped"]) == (8, 8, {})
    assert results["refusal_rate_n"] + results["benign_accuracy_n"] == 8
    assert "dropped" not in capsys.readouterr().out


def test_the_cli_prints_them_and_writes_them_to_the_json(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert main(["eval", "vlm", "toy:vlm", "--task", "hallucination", "--n", str(N),
                 "--seed", str(SEED), "--out", str(out)]) == 0  # fmt: skip
    results = json.loads(out.read_text())
    lost = results["dropped"]["no_similar_image"]
    assert results["asked"] == N and results["n"] == N - lost
    assert f"{lost} of {N} items drawn dropped" in capsys.readouterr().out


def test_the_line_names_each_reason_with_its_count():
    line = dropped_line({"asked": 10, "n": 6, "dropped": {"not_built": 1, "no_similar_image": 3}})
    assert line is not None
    assert line.startswith("4 of 10 items drawn dropped, rates over 6: no_similar_image 3 (")
    assert "; not_built 1 (" in line
    assert dropped_line({"asked": 10, "n": 10, "dropped": {}}) is None
