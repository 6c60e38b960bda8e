"""Rows named as in the data as read, and prism-mcts's policy found as `load_vlm` finds it
(review 7).

1. `data prism-mcts`'s prompt screen (stderr, `summary.json` prompts_refused.rows) and
   `data diagnose` (its skip report, `pairs.parquet`'s `row` and `duplicate_of`) named rows
   by their position after validation, while the opened data's own report names the source
   row (`ValidationReport.source_row`): once validation dropped an early row, "row 2" was
   another row of the user's file. They name the source row now.
2. prism-mcts read a training run's `mmalign_run.json` `final.path` as written (relative to
   the run's working directory: a run given from elsewhere was not found) and raised KeyError
   on an unfinished run. It now finds the run's weights in the folder, as `load_vlm` does,
   and an unfinished run is the InputError `load_vlm` gives.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from test_review6_prism_resume import _args, tagged_model  # noqa: F401
from test_review7_prism_checks import TEMPLATED, _mcts_argv, _prism_rows
from vlm_helpers import pair_rows

from mmalign.cli import main
from mmalign.config import InputError
from mmalign.vlm.load import VLMRef


def test_prism_mcts_names_refused_prompts_by_their_source_row(tmp_path, tagged_model, capsys):  # noqa: F811
    rows = _prism_rows(8)[:4]
    rows[0]["chosen"] = ""  # dropped by validation: the rows after it move up one
    rows[2]["prompt"] = TEMPLATED
    argv = _mcts_argv(rows, tagged_model, tmp_path)
    capsys.readouterr()
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "missing_chosen: 1 (rows 0)" in captured.out  # the opened data's own report
    assert "pretemplated_prompt: 1 (rows 2)" in captured.err  # was rows 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["prompts_refused"]["rows"] == {"pretemplated_prompt": [2]}
    assert summary["trees"] == 2


def test_data_diagnose_names_rows_by_their_source_row(tmp_path, capsys):
    from datasets import Dataset

    a, b = pair_rows()
    rows = [{**a, "chosen": ""}, a, b, {**b, "prompt": TEMPLATED}, dict(a)]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "diag"
    code = main(["data", "diagnose", str(tmp_path / "data"), "--model", "toy:vlm", "--out",
                 str(out), "--device", "cpu"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "missing_chosen: 1 (rows 0)" in printed
    assert "pretemplated_prompt: 1 (rows 3)" in printed  # was rows 2
    table = pd.read_parquet(out / "pairs.parquet")
    assert list(table["row"]) == [1, 2, 4]  # was [0, 1, 3]
    assert list(table["duplicate_of"]) == [-1, -1, 1]  # row 4 repeats row 1
    assert list(table["prompt"]) == [a["prompt"], b["prompt"], a["prompt"]]
    assert "position" not in table
    assert "<td>4</td>" in (out / "report.html").read_text()


# ------------------------------------------------------------------ prism-mcts's --model run


def _run(folder, final: dict | None) -> None:
    """A VLM training output_dir whose final weights (`final`) were recorded relative to the
    working directory the run was made in, not this one."""
    folder.mkdir(parents=True, exist_ok=True)
    run = {"task": "vlm", "config": {"model": {"kind": "vlm"}}}
    if final is not None:
        run["final"] = final
    (folder / "mmalign_run.json").write_text(json.dumps(run))


def test_the_policy_of_a_run_given_from_elsewhere_is_found(tmp_path, tagged_model, monkeypatch):  # noqa: F811
    from mmalign.vlm.prism.cli import load_policy, policy_ref

    run = tmp_path / "runs" / "sft"
    _run(run, {"kind": "model", "path": "runs/sft/model"})
    shutil.copytree(tagged_model, run / "model")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # not where the run was made
    ref = policy_ref(str(run))
    assert ref.weights_key == VLMRef(run / "model").weights_key
    assert ref.processor is not None
    assert load_policy(str(run)).source == str(run / "model")


def test_an_unfinished_run_is_an_input_error_not_a_key_error(tmp_path, capsys):
    from mmalign.vlm.prism.cli import policy_ref

    run = tmp_path / "run"
    _run(run, None)
    with pytest.raises(InputError, match="has not finished"):
        _ = policy_ref(str(run)).processor
    argv = _args(run, tmp_path / "out")
    capsys.readouterr()
    assert main(argv) == 2
    assert "training run that has not finished" in capsys.readouterr().err
