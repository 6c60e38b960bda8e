"""Recipe keys as users write them.

- `train.mixed_precision=no` (docs/cli.md's spelling, the default) failed: YAML 1.1 reads
  `no` as false, answered with "expected one of 'no', 'fp16', 'bf16', got bool False".
- A typo of an objective term's own key (`wieght`, `los`) was answered with the loss's
  arguments only ("valid: beta"), never suggesting `weight` or `loss`.
"""

from __future__ import annotations

import pytest

from mmalign.cli import main
from mmalign.config import ConfigError, load_config
from mmalign.train import Config

BASE = ["model.name_or_path=toy:sd", "data.path=toy:style", "data.split=train"]


@pytest.mark.parametrize("text", ["no", "'no'", "false", "fp16"])
def test_mixed_precision_no_on_the_command_line(text):
    cfg = load_config(Config, None, [*BASE, f"train.mixed_precision={text}"])
    assert cfg.train.mixed_precision == ("fp16" if text == "fp16" else "no")


def test_mixed_precision_no_in_a_yaml_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "model: {name_or_path: toy:sd}\ndata: {path: toy:style, split: train}\n"
        "train:\n  mixed_precision: no\n"
    )
    assert load_config(Config, path).train.mixed_precision == "no"


def test_a_boolean_is_still_not_a_choice_it_does_not_spell():
    with pytest.raises(ConfigError, match=r"train\.mixed_precision: expected one of"):
        load_config(Config, None, [*BASE, "train.mixed_precision=yes"])


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("objective.0.wieght=2", "did you mean 'weight'?"),
        ("objective.0.los=dpo", "did you mean 'loss'?"),
        ("objective.0.bta=1.0", "did you mean 'beta'?"),
    ],
)
def test_a_term_key_typo_suggests_the_term_keys_too(override, suggestion, capsys):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}: .*{suggestion}"):
        load_config(Config, None, [*BASE, override])
    assert main(["config", "show", "configs/toy/mapo.yaml", override]) == 2
    err = capsys.readouterr().err
    assert key in err and suggestion in err


def test_valid_term_keys_still_load():
    cfg = load_config(Config, None, [*BASE, "objective.0.weight=2", "objective.0.name=x"])
    assert cfg.objective[0]["weight"] == 2
