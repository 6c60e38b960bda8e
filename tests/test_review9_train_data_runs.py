"""Review 9: an existing output_dir said first (exit 2), resuming suggested only for the same
recipe, no false difference from an objective term's default, every dropped row counted in
the printed summary, and the steps this invocation ran."""

from __future__ import annotations

import json
from pathlib import Path

from mmalign.config import load_config, to_dict
from mmalign.data.schema import ValidationReport
from mmalign.train import Config
from mmalign.train.resume import recipe_changes

ROOT = Path(__file__).resolve().parents[1]
VLM = str(ROOT / "configs/toy/vlm_dpo.yaml")


def existing_run_problem(cfg: Config) -> str | None:
    from mmalign.train.existing_run import existing_run_problem as problem

    return problem(cfg)


def _run(out: Path, cfg: Config) -> None:
    (out / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (out / "checkpoints" / "checkpoint-5" / "state.json").write_text("{}")
    (out / "mmalign_run.json").write_text(json.dumps({"config": to_dict(cfg)}, default=str))


def test_same_recipe_suggests_resuming(tmp_path: Path) -> None:
    cfg = load_config(Config, VLM, [f"output_dir={tmp_path}"])
    _run(tmp_path, cfg)
    out = existing_run_problem(cfg)
    assert out is not None and "train.resume_from=latest" in out


def test_other_recipe_does_not_suggest_resuming(tmp_path: Path) -> None:
    _run(tmp_path, load_config(Config, VLM, [f"output_dir={tmp_path}", "train.seed=7"]))
    cfg = load_config(Config, VLM, [f"output_dir={tmp_path}"])
    out = existing_run_problem(cfg)
    assert out is not None and "resume_from" not in out and "train.seed: 7 -> 0" in out
    resumed = load_config(Config, VLM, [f"output_dir={tmp_path}", "train.resume_from=latest"])
    assert "another recipe" in (existing_run_problem(resumed) or "")


def test_an_existing_run_is_an_input_error(tmp_path: Path, capsys) -> None:
    from mmalign.cli import main

    cfg = load_config(Config, VLM, [f"output_dir={tmp_path}"])
    _run(tmp_path, cfg)
    try:
        code = main(["train", VLM, f"output_dir={tmp_path}"])
    except SystemExit as exit:
        code = exit.code
    assert code == 2
    assert "already holds checkpoints of this recipe" in capsys.readouterr().err


def test_term_defaults_are_no_difference(tmp_path: Path) -> None:
    cfg = load_config(Config, VLM, [f"output_dir={tmp_path}"])
    saved = to_dict(cfg)
    saved["objective"] = [{**t, "weight": 1.0, "pair": "main"} for t in saved["objective"]]
    run = tmp_path / "mmalign_run.json"
    run.write_text(json.dumps({"config": saved}, default=str))
    assert recipe_changes(run, to_dict(cfg)) == []
    saved["objective"][0]["weight"] = 2.0
    run.write_text(json.dumps({"config": saved}, default=str))
    assert recipe_changes(run, to_dict(cfg)) == ["objective.0.weight: 2.0 -> 1.0"]


def test_printed_summary_counts_every_dropped_row(capsys) -> None:
    from mmalign.vlm.fitting import RowCheck

    report = ValidationReport()
    for i in range(5):
        report.keep(i)
    report.skip(5, "missing_chosen")
    report.skip(6, "image_outside_root")
    check = RowCheck(list(range(5)), report)
    check.skipped["pretemplated_prompt"] = [2]
    report.kept, report.total = report.kept - 1, report.total - 1
    report.skip(2, "pretemplated_prompt")
    check.finish([0, 1, 3, 4], None)
    out = capsys.readouterr().out
    assert "skipped 3 of 7 rows" in out
    assert "1 missing_chosen: row 5" in out and "1 image_outside_root: row 6" in out
    assert "1 pretemplated_prompt: row 2" in out


def test_steps_of_this_invocation() -> None:
    from mmalign.train.loop import TrainResult

    done = TrainResult(Path("."), 20, {}, {}, 0.2, start_step=20)
    assert done.ran == 0 and done.line().startswith("trained 0 steps (resumed at step 20")
    assert TrainResult(Path("."), 300, {}, {}, 3.0, 5).line().startswith("trained 295 steps")
    assert TrainResult(Path("."), 4, {}, {}, 3.0).line() == "trained 4 steps in 3 s"
