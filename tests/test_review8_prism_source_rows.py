"""`data prism-mcts`'s summary.json names each tree's row of `--data` (review 8).

A tree's `row` is its request's position among the rows searched, after the data's
validation and the prompt screen left rows out: it is the resume key (`trees/tree-<row>.json`,
the batches' seeds) and stays so. `per_tree` gave that position only, while the data's report
and the refused prompts name source rows (`ValidationReport.source_row`); it now adds
`source_row`, the row of `--data` each tree searched.
"""

from __future__ import annotations

import json

from test_review6_prism_resume import tagged_model  # noqa: F401
from test_review7_prism_checks import TEMPLATED, _mcts_argv, _prism_rows

from mmalign.cli import main


def test_per_tree_names_the_source_row_and_keeps_the_tree_ids(tmp_path, tagged_model, capsys):  # noqa: F811
    rows = _prism_rows(8)[:4]
    rows[0]["chosen"] = ""  # dropped by validation
    rows[2]["prompt"] = TEMPLATED  # refused by the prompt screen
    argv = _mcts_argv(rows, tagged_model, tmp_path)
    assert main(argv) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    per_tree = summary["per_tree"]
    assert [t["row"] for t in per_tree] == [0, 1]  # the resume keys, as before
    assert [t["source_row"] for t in per_tree] == [1, 3]  # the rows of --data searched
    trees = sorted(p.name for p in (tmp_path / "out" / "trees").glob("*.json"))
    assert trees == ["tree-000000.json", "tree-000001.json"]
    capsys.readouterr()
    assert main(argv) == 0  # resumed: the trees are loaded by their ids, not searched again
    again = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert again["trees_loaded"] == 2
    assert [t["source_row"] for t in again["per_tree"]] == [1, 3]
