"""`mmalign eval report DIR` given a folder that is not there, or a training run's folder
whose win rate is in its eval/ folder: it said "DIR has no results.json: run `mmalign eval
winrate` first" for both, though the first is a typo and the second has one (review 8)."""

from __future__ import annotations

from mmalign.cli import main


def test_a_missing_folder_is_named_missing(tmp_path, capsys) -> None:
    assert main(["eval", "report", str(tmp_path / "nope")]) == 2
    assert f"{tmp_path / 'nope'}: no such folder" in capsys.readouterr().err


def test_a_run_folder_points_to_its_eval_folder(tmp_path, capsys) -> None:
    (tmp_path / "run" / "eval").mkdir(parents=True)
    (tmp_path / "run" / "eval" / "results.json").write_text("{}")
    assert main(["eval", "report", str(tmp_path / "run")]) == 2
    assert f"did you mean {tmp_path / 'run' / 'eval'}?" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", "report", str(tmp_path / "empty")]) == 2
    assert "has no results.json: run `mmalign eval winrate` first" in capsys.readouterr().err
