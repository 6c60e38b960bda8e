"""A mistyped `objective.N.pair` fails when the recipe loads, with the key and the name meant.

The pair a loss term reads was checked only at the first training step (the diffusion recipe:
"objective term 'mian/dpo' needs pair 'mian' but the scorer produced: main"), after the model
was loaded, the data built and the cache encoded; the VLM recipe checked it after loading the
model. The pairs a model kind's scorer produces are known from the config alone.
"""

from __future__ import annotations

import pytest

from mmalign.config import ConfigError, load_config
from mmalign.train import Config

DIFFUSION = ["model.name_or_path=toy:sd", "data.path=toy:style", "data.split=train"]
VLM = ["model.name_or_path=toy:vlm", "model.kind=vlm", "data.path=toy:safety", "data.split=train"]


def test_a_mistyped_diffusion_pair_is_named_with_the_pair_meant():
    with pytest.raises(ConfigError) as info:
        load_config(Config, None, [*DIFFUSION, "objective.0.pair=mian"])
    message = str(info.value)
    assert message.startswith("objective.0.pair: ")
    assert "'mian'" in message and "did you mean 'main'?" in message


def test_a_vlm_pair_is_checked_against_the_vlm_pairs():
    with pytest.raises(ConfigError, match=r"^objective\.1\.pair: .*did you mean 'visual'\?"):
        load_config(Config, None, [*VLM, "objective=[{loss: dpo}, {pair: visul, loss: dpo}]"])
    cfg = load_config(Config, None, [*VLM, "objective=[{loss: dpo}, {pair: blind, loss: dpo}]"])
    assert [t.get("pair", "main") for t in cfg.objective] == ["main", "blind"]


def test_a_vlm_pair_on_a_diffusion_model_lists_the_pairs_it_has():
    with pytest.raises(ConfigError, match=r"^objective\.1\.pair: .*valid: main$"):
        load_config(
            Config, None, [*DIFFUSION, "objective=[{loss: dpo}, {pair: visual, loss: dpo}]"]
        )


def test_the_pair_is_checked_before_train_starts(tmp_path, monkeypatch, capsys):
    """`mmalign train` ends with the message (status 2) before the loop loads anything."""
    from mmalign import cli

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {name_or_path: toy:sd}\ndata: {path: toy:style, split: train}\n"
        "objective:\n  - {pair: mian, loss: dpo, beta: 500.0}\n"
    )

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("mmalign.train.loop.train", no_training)
    assert cli.main(["train", str(recipe), f"output_dir={tmp_path / 'out'}"]) == 2
    assert "objective.0.pair: " in capsys.readouterr().err
