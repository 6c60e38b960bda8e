"""`output_dir` that is a file (or lies under one) is named before anything loads, with the
other inputs of the recipe, instead of an unnamed "File exists" once the data is built and
the model is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmalign.cli import main
from mmalign.config import InputError, load_config
from mmalign.train import Config
from mmalign.train.sources import check_sources

RECIPE = "configs/toy/dpo.yaml"


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "afile"
    path.write_text("")
    return path


def test_output_dir_that_is_a_file(a_file: Path) -> None:
    cfg = load_config(Config, RECIPE, [f"output_dir={a_file}"])
    with pytest.raises(InputError, match=f"output_dir: {a_file} is a file, not a folder"):
        check_sources(cfg)


def test_output_dir_under_a_file(a_file: Path) -> None:
    cfg = load_config(Config, RECIPE, [f"output_dir={a_file}/run"])
    with pytest.raises(InputError, match=f"output_dir: {a_file} is a file, not a folder"):
        check_sources(cfg)


def test_output_dir_fine(tmp_path: Path) -> None:
    check_sources(load_config(Config, RECIPE, [f"output_dir={tmp_path}/new/run"]))
    check_sources(load_config(Config, RECIPE, [f"output_dir={tmp_path}"]))


def test_train_stops_before_loading(a_file: Path, capsys, monkeypatch) -> None:
    import mmalign.train.loop as loop

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started")

    monkeypatch.setattr(loop, "train", never)
    assert main(["train", RECIPE, f"output_dir={a_file}"]) == 2
    err = capsys.readouterr().err
    assert f"output_dir: {a_file} is a file, not a folder" in err and "Traceback" not in err
