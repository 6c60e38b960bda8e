"""`mmalign demo --out OUT [key=value ...]` trains into OUT/train and evaluates OUT/train. An
`output_dir=...` override trained elsewhere, then the demo evaluated OUT/train: an earlier
demo's weights, or none. It is refused before training, naming `--out`; other overrides reach
the recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mmalign.train.loop as loop
from mmalign.cli import main


class _Trained(Exception):
    """Raised by the stand-in for training: the demo got as far as training."""


@pytest.fixture
def trained(monkeypatch) -> list[Any]:
    seen: list[Any] = []

    def train(cfg: Any, recipe: Any) -> Any:
        seen.append(cfg)
        raise _Trained

    monkeypatch.setattr(loop, "train", train)
    return seen


def test_output_dir_override_is_refused(tmp_path: Path, trained, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path / "demo"), "output_dir=elsewhere"]) == 2
    err = capsys.readouterr().err
    assert "output_dir" in err and "--out" in err and "Traceback" not in err
    assert trained == []


def test_other_overrides_reach_the_recipe(tmp_path: Path, trained) -> None:
    with pytest.raises(_Trained):
        main(["demo", "--out", str(tmp_path / "demo"), "train.max_steps=2"])
    assert trained[0].train.max_steps == 2
    assert trained[0].output_dir == str(tmp_path / "demo" / "train")


def test_the_report_names_the_overrides_it_ran_with() -> None:
    from mmalign.demo import _with

    assert _with(()) == ""
    assert _with(("train.max_steps=2", "seed=1")) == " with `train.max_steps=2` `seed=1`"
