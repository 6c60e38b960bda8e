"""Typed configs: YAML, overrides, and error messages that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmalign.config import ConfigError, apply_overrides, load_config
from mmalign.train import Config

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = "model:\n  name_or_path: some/model\ndata:\n  path: some/data\n  split: train\n"


@pytest.fixture
def minimal(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL)
    return path


def test_defaults_and_overrides(minimal):
    cfg = load_config(
        Config,
        minimal,
        ["train.learning_rate=1e-5", "objective.0.beta=2500", "lora=null", "train.seed=3"],
    )
    assert cfg.train.learning_rate == 1e-5 and isinstance(cfg.train.learning_rate, float)
    assert cfg.objective == [{"pair": "main", "loss": "dpo", "beta": 2500}]
    assert cfg.lora is None and cfg.train.seed == 3
    assert cfg.model.kind == "diffusion"


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL + "train:\n  learning_rate: 1e-5\n")
    assert load_config(Config, path).train.learning_rate == 1e-5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["train.learnig_rate=1"],
            r"unknown key 'train.learnig_rate'; did you mean 'train.learning_rate'",
        ),
        (["modle.kind=vlm"], r"unknown key 'modle'; did you mean 'model'"),
        (["train.batch_size=abc"], r"train.batch_size: expected int, got str 'abc'"),
        (["train.batch_size=2.5"], r"train.batch_size: expected int, got float 2.5"),
        (["train.scale_lr=maybe"], r"train.scale_lr: expected bool, got str 'maybe'"),
        (["train.scale_lr=1"], r"train.scale_lr: expected bool, got int 1"),
        (["model.kind=diffusoin"], r"model.kind: expected one of .*did you mean 'diffusion'"),
        (["train.max_steps=0"], r"train.max_steps must be >= 1"),
        (["objective.0.loss=dpoo"], r"objective\[0\]\.loss: unknown loss 'dpoo'"),
        (["lora.target_modules=to_q"], r"lora.target_modules: expected a list"),
        (["train=3"], r"train: expected a mapping"),
        (["objective.3.beta=1"], r"needs a list index below 1"),
        (["objective[0].beta=1"], r"list items take a dotted index: 'objective\.0\.beta'"),
        (["nokey"], r"not of the form key=value"),
    ],
)
def test_errors_name_the_key(minimal, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Config, minimal, overrides)


def test_missing_required_field_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name_or_path: m\ndata:\n  path: d\n")
    with pytest.raises(ConfigError, match=r"missing required key 'data.split'"):
        load_config(Config, path)


def test_missing_file_and_bad_top_level(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Config, tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Config, path)


def test_overrides_do_not_mutate_the_input():
    raw = {"train": {"seed": 1}}
    out = apply_overrides(raw, ["train.seed=2", "new.deep.key=x"])
    assert raw == {"train": {"seed": 1}}
    assert out["train"]["seed"] == 2 and out["new"]["deep"]["key"] == "x"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(Config, path)
    assert cfg.build_objective().terms
