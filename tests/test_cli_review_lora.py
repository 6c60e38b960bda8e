"""A LoRA section with an out-of-range dropout or alpha fails when the recipe loads, naming the
key (exit status 2, no traceback), instead of a torch traceback once the model is loaded
(dropout) or a silently sign-flipped or disabled adapter (alpha <= 0)."""

from __future__ import annotations

import re

import pytest

from mmalign.cli import main
from mmalign.config import ConfigError, load_config
from mmalign.train import Config

RECIPE = "configs/toy/dpo.yaml"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lora.dropout=2", "lora.dropout must be in [0, 1), got 2.0"),
        ("lora.dropout=-0.1", "lora.dropout must be in [0, 1), got -0.1"),
        ("lora.alpha=-3", "lora.alpha must be > 0 (or null: alpha = rank), got -3.0"),
        ("lora.alpha=0", "lora.alpha must be > 0 (or null: alpha = rank), got 0.0"),
    ],
)
def test_bad_lora_values_fail_at_load(override: str, message: str, capsys) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(Config, RECIPE, [override])
    assert main(["config", "show", RECIPE, override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_good_lora_values_still_load() -> None:
    cfg = load_config(Config, RECIPE, ["lora.dropout=0.5", "lora.alpha=16", "lora.rank=4"])
    assert cfg.lora is not None and cfg.lora.dropout == 0.5 and cfg.lora.alpha == 16.0
    assert load_config(Config, RECIPE, ["lora.alpha=null"]).lora.alpha is None  # type: ignore[union-attr]
