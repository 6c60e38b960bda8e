"""Review 7: a diffusion run's record of its pairs with `data.max_samples`.

- With `data.max_samples`, `mmalign_run.json` put what the WHOLE toy build left out
  (`ties.dropped: 40`) next to `rows`, the truncated prefix (`rows: 4`), and the printed
  "building toy:... left out N candidate pairs" line read as if it were this run's. The
  build's counts now have their own key (`build_skipped`, the whole build, by reason, ties
  included) and the line says they are the whole build's; `skipped` and `ties` are what this
  run's rows saw.
"""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from mmalign.data.schema import ValidationReport
from mmalign.words import plural


def test_pairs_record_keeps_the_build_apart_from_the_rows():
    from mmalign.data.run_record import pairs_record

    rows = Dataset.from_dict({"prompt": ["a", "b", "c"], "label": [1.0, 0.5, 1.0]})
    report = ValidationReport(total=6, kept=3, skipped={"tie": 2, "missing_caption": 1})
    record = pairs_record(rows, report, {"tie": 40, "no_visible_flaw": 1})
    assert record == {
        "skipped": {"missing_caption": 1},
        "ties": {"dropped": 2, "kept": 1},
        "build_skipped": {"tie": 40, "no_visible_flaw": 1},
    }
    # not toy data: no build to speak of, so no key for it
    assert "build_skipped" not in pairs_record(rows, report)


@pytest.mark.parametrize("max_samples", [None, 2])
def test_toy_run_records_what_its_build_left_out(tmp_path, capsys, max_samples):
    """A one-step toy:pairs run whose build dropped tied pairs: without data.max_samples it
    trains on every built row; with it, on a prefix, and the line says the counts are the
    whole build's."""
    from diffusion_helpers import config_with

    from mmalign.diffusion.recipe import DiffusionRecipe
    from mmalign.toy.cache import toy_data_folder
    from mmalign.toy.paths import model_path
    from mmalign.train.loop import train

    toy = {"n": 12, "steps": 2, "guidance": 2.5, "progress": False, "tie_margin": 0.05}
    data = {"path": "toy:pairs", "split": "train", "toy": toy}
    if max_samples is not None:
        data["max_samples"] = max_samples
    raw = {
        "model": {"name_or_path": "toy:sd"},
        "data": data,
        "objective": [{"loss": "dpo", "beta": 500.0}],
        "lora": {"rank": 4},
        "train": {"max_steps": 1, "batch_size": 2, "learning_rate": 1e-4, "log_every": 1,
                  "checkpoint_every": 1, "trackers": [], "lr_scheduler": "constant"},
        "validation": {"enabled": False},
        "output_dir": str(tmp_path / "run"),
    }  # fmt: skip
    train(config_with(raw, {}), DiffusionRecipe)
    run = json.loads((tmp_path / "run" / "mmalign_run.json").read_text())
    folder = toy_data_folder("pairs", toy, str(model_path("sd")))
    summary = json.loads((folder / "summary.json").read_text())
    assert "tie" not in summary["skipped"]  # kept apart from skipped candidates (review 8)
    dropped = summary["ties"]["dropped"]
    assert dropped > 0, summary["skipped"]  # the case under test: the build dropped ties
    assert summary["rows"] == 12 - dropped
    assert run["rows"] == (summary["rows"] if max_samples is None else max_samples)
    # the whole build's counts under their own key; this run's rows saw no tie and no skip
    assert run["build_skipped"] == {"tie": dropped}
    assert run["ties"] == {"dropped": 0, "kept": 0}
    assert run["skipped"] == {}  # no row was unreadable: ties are not skipped rows
    line = next(x for x in capsys.readouterr().out.splitlines() if "left out" in x)
    assert f"left out {plural(dropped, 'candidate pair')} (tie: {dropped})" in line
    prefix = f"first {max_samples} of its {summary['rows']} rows"
    assert ("whole build" in line and prefix in line) if max_samples else "whole" not in line
