"""Reading a recipe file: a key given twice is an error naming the key and its line (YAML
itself keeps the last one and silently drops the first section), a file that is not UTF-8
text and a folder in place of the file are named as such; all exit with status 2, no
traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmalign.cli import main
from mmalign.config import ConfigError, load_config
from mmalign.train import Config


def _fails(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_duplicate_top_level_key_is_named_with_its_line(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "dup.yaml"
    recipe.write_text(
        "model:\n  name_or_path: toy:sd\ndata:\n  path: toy:pairs\n  split: train\n"
        "model:\n  kind: diffusion\n"
    )
    with pytest.raises(ConfigError, match=r"line 6, column 1: .*'model' is given twice"):
        load_config(Config, recipe)
    assert "key 'model' is given twice (YAML would keep only the last)" in _fails(
        ["config", "show", str(recipe)], capsys
    )


def test_duplicate_nested_key_is_named(tmp_path: Path) -> None:
    recipe = tmp_path / "dup.yaml"
    recipe.write_text(
        "model: {name_or_path: toy:sd}\ndata: {path: toy:pairs, split: train}\n"
        "train:\n  learning_rate: 1.0e-5\n  max_steps: 3\n  learning_rate: 2.0e-5\n"
    )
    with pytest.raises(ConfigError, match=r"line 6, column 3: .*'learning_rate' is given twice"):
        load_config(Config, recipe)


def test_duplicate_key_in_an_override_value() -> None:
    with pytest.raises(ConfigError, match="'loss' is given twice"):
        load_config(Config, "configs/toy/dpo.yaml", ["objective=[{loss: dpo, loss: mapo}]"])


def test_merge_keys_still_load(tmp_path: Path) -> None:
    recipe = tmp_path / "merge.yaml"
    recipe.write_text(
        "base: &b {name_or_path: toy:sd, kind: vlm}\n"
        "model:\n  <<: *b\n  kind: diffusion\ndata: {path: toy:pairs, split: train}\n"
    )
    # `base` is not a recipe key: the merge itself must not be read as a duplicate `kind`
    with pytest.raises(ConfigError, match="unknown key 'base'"):
        load_config(Config, recipe)


def test_non_utf8_file_is_named(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes(b"model:\n  name_or_path: toy:sd # caf\xe9\n")
    err = _fails(["config", "show", str(recipe)], capsys)
    assert f"{recipe}: not UTF-8 text" in err


def test_folder_is_not_reported_as_missing(capsys) -> None:
    err = _fails(["config", "show", "configs"], capsys)
    assert "configs is a folder, not a YAML file" in err and "not found" not in err
