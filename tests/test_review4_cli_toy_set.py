"""`mmalign toy data KIND --set KEY=VALUE --model MODEL`: a value that is not YAML ended in a
raw ParserError traceback; `--set guidance=1e1` reached the builder as the string '1e1' (an
error about comparing str and int, naming no option); `--set n=5` was answered with Python's
"multiple values for keyword argument"; `--model toy:sd` (how recipes, `sample` and
`toy build` name the shipped models) was refused as a missing folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mmalign.toy.datasets as toy_datasets
from mmalign.cli import main
from mmalign.toy.paths import model_path


@pytest.fixture
def calls(monkeypatch) -> list[dict[str, Any]]:
    """build_dataset replaced by a recorder: the tests check what the command passes."""
    seen: list[dict[str, Any]] = []

    def build(kind: str, out: Any, **kwargs: Any) -> dict[str, Any]:
        seen.append({"kind": kind, "out": out, **kwargs})
        return {"kind": kind, "rows": 0}

    monkeypatch.setattr(toy_datasets, "build_dataset", build)
    return seen


def _fails(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_value_that_is_not_yaml_names_the_option(tmp_path: Path, calls, capsys) -> None:
    err = _fails(["toy", "data", "pairs", "--out", str(tmp_path), "--set", "label_noise=["],
                 capsys)  # fmt: skip
    assert "--set 'label_noise=['" in err and "YAML" in err
    assert calls == []


def test_exponent_floats_are_numbers(tmp_path: Path, calls) -> None:
    argv = ["toy", "data", "pairs", "--out", str(tmp_path), "--set", "guidance=1e1"]
    assert main([*argv, "--set", "label_noise=5e-2"]) == 0
    assert calls[0]["guidance"] == 10.0 and calls[0]["label_noise"] == 0.05


@pytest.mark.parametrize(
    ("option", "flag"), [("n", "--n"), ("seed", "--seed"), ("model", "--model")]
)
def test_an_option_with_its_own_flag(tmp_path: Path, calls, capsys, option: str, flag: str) -> None:
    err = _fails(["toy", "data", "pairs", "--out", str(tmp_path), "--set", f"{option}=5"], capsys)
    assert f"--set {option}=..." in err and f"give {flag}" in err
    assert calls == []


def test_a_builder_type_error_names_the_options(tmp_path: Path, monkeypatch, capsys) -> None:
    def build(kind: str, out: Any, **kwargs: Any) -> dict[str, Any]:
        return {"x": kwargs["label_noise"] <= 0}  # what the pairs builder does with the value

    monkeypatch.setattr(toy_datasets, "build_dataset", build)
    err = _fails(["toy", "data", "pairs", "--out", str(tmp_path), "--set", "label_noise=abc"],
                 capsys)  # fmt: skip
    assert "label_noise='abc'" in err


@pytest.mark.parametrize("name", ["sd", "flow"])
def test_model_takes_the_toy_names(tmp_path: Path, calls, name: str) -> None:
    assert main(["toy", "data", "pairs", "--out", str(tmp_path), "--model", f"toy:{name}"]) == 0
    assert calls[0]["model"] == str(model_path(name))


def test_a_missing_model_folder_is_still_named(tmp_path: Path, calls, capsys) -> None:
    err = _fails(["toy", "data", "pairs", "--out", str(tmp_path), "--model", "toy:sdd"], capsys)
    assert "--model toy:sdd" in err


def test_an_unknown_data_toy_option_is_named_before_anything_is_built(tmp_path, monkeypatch):
    from mmalign.toy.cache import toy_pairs

    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path))
    with pytest.raises(
        ValueError, match=r"data\.toy: 'pairs' has no option 'nn'; did you mean 'n'"
    ):
        toy_pairs("pairs", {"nn": 10})
    assert not any(tmp_path.rglob("pairs-*"))  # nothing was built
