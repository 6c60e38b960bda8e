"""Counts below 1 were taken silently: `mmalign showcase --steps 0` wrote a report of untrained
policies (final loss nan, accuracy 0.5) and exit status 0; `mmalign data show CARD --sample
-1` read no row ("sample: 0 rows") and reported the card as fine. Both are input errors now,
named, with exit status 2, as the other commands' counts are."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmalign.cli import main


@pytest.mark.parametrize("steps", ["0", "-5"])
def test_showcase_steps(tmp_path: Path, capsys, steps: str) -> None:
    assert main(["showcase", "--out", str(tmp_path / "s"), "--steps", steps]) == 2
    assert f"--steps must be >= 1, got {steps}" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("sample", ["0", "-1"])
def test_data_show_sample(capsys, sample: str) -> None:
    assert main(["data", "show", "toy_pairs", "--sample", sample]) == 2
    err = capsys.readouterr().err
    assert f"--sample must be >= 1, got {sample}" in err and "Traceback" not in err


def test_showcase_one_step_still_runs(tmp_path: Path) -> None:
    assert main(["showcase", "--out", str(tmp_path / "s"), "--steps", "1"]) == 0
    assert (tmp_path / "s" / "report.md").is_file()
