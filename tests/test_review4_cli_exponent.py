"""YAML 1.1 reads a float in exponent form without a dot (`5e3`, `1e-4`) as text. Typed float
keys (`train.learning_rate=1e-4`) took it, but untyped places did not: a loss argument
(`objective.0.beta=5e3` was refused), the toy builder's options (`data.toy.guidance: 1e1`
reached the builder as the string '1e1') and the dense head's `reward` options. Recipes and
overrides now read these spellings as numbers everywhere, as YAML 1.2 does."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmalign.cli import main
from mmalign.config import load_config, load_yaml
from mmalign.train import Config


def test_loss_argument_override_in_exponent_form() -> None:
    cfg = load_config(Config, "configs/toy/mapo.yaml", ["objective.0.beta=5e3"])
    assert cfg.objective[0]["beta"] == 5000.0
    assert isinstance(cfg.objective[0]["beta"], float)


def test_untyped_options_in_a_recipe_file(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {name_or_path: toy:sd}\n"
        "data: {path: toy:pairs, split: train, toy: {n: 8, guidance: 1e1}}\n"
        "objective: [{loss: dpo, beta: 2.5e3, weight: 1E0}]\n"
    )
    cfg = load_config(Config, recipe)
    assert cfg.data.toy == {"n": 8, "guidance": 10.0}
    assert cfg.objective[0]["beta"] == 2500.0 and cfg.objective[0]["weight"] == 1.0


@pytest.mark.parametrize(
    ("text", "value"),
    [("1e5", 1e5), ("-1e-5", -1e-5), ("+2e2", 200.0), ("1.5E3", 1500.0), (".5e1", 5.0),
     ("1.0e5", 1e5), ("1_000e-3", 1.0), ("1.0e-5", 1e-5), ("0.5", 0.5), ("10", 10)],
)  # fmt: skip
def test_numbers(text: str, value: float) -> None:
    read = load_yaml(text)  # a float that also keeps its text, for text keys (below)
    assert read == value and isinstance(read, type(value))


def test_a_text_key_keeps_what_was_written(tmp_path) -> None:
    # a short commit hash of digits-e-digits: a number to YAML 1.2, the revision to mmalign
    cfg = load_config(Config, "configs/toy/dpo.yaml", ["model.revision=8e41925", "output_dir=x"])
    assert cfg.model.revision == "8e41925"
    (tmp_path / "r.yaml").write_text(
        "model: {name_or_path: toy:sd, revision: 1e5}\ndata: {path: toy:pairs, split: train}\n"
    )
    assert load_config(Config, tmp_path / "r.yaml").model.revision == "1e5"


@pytest.mark.parametrize("text", ["1e", "e5", "1e5x", "v1e5", "1e5.0", "1.2.3e4", "0x1e5"])
def test_text_that_only_looks_like_a_number(text: str) -> None:
    assert isinstance(load_yaml(text), str | int)
    assert load_yaml(f"'{text}'") == text


def test_config_show_prints_the_number(capsys) -> None:
    assert main(["config", "show", "configs/toy/mapo.yaml", "objective.0.beta=5e3"]) == 0
    assert "beta: 5000.0" in capsys.readouterr().out


def test_an_all_digit_text_value_names_the_quoting() -> None:
    from mmalign.config import ConfigError

    with pytest.raises(ConfigError, match="YAML read it as a number: quote it"):
        load_config(Config, "configs/toy/dpo.yaml", ["model.revision=1234567", "output_dir=x"])
    quoted = load_config(
        Config, "configs/toy/dpo.yaml", ["model.revision='1234567'", "output_dir=x"]
    )
    assert quoted.model.revision == "1234567"
