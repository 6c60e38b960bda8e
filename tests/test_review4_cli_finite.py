"""Non-finite numbers and YAML comments on the command line are refused, not run."""

import pytest

from mmalign.cli import main
from mmalign.config import ConfigError, apply_overrides, load_config
from mmalign.train import Config

RECIPE = "configs/toy/dpo.yaml"


@pytest.mark.parametrize("value", ["nan", "inf", "Infinity"])
def test_sample_guidance_must_be_finite(value, capsys):
    with pytest.raises(SystemExit) as end:
        main(["sample", "toy:sd", "--prompt", "a red circle", "--guidance", value])
    assert end.value.code == 2
    assert "--guidance: must be a finite number" in capsys.readouterr().err


def test_label_lease_must_be_finite(capsys):
    with pytest.raises(SystemExit) as end:
        main(["label", "--data", "x", "--lease", "nan"])
    assert end.value.code == 2
    assert "--lease: must be a finite number" in capsys.readouterr().err


def test_an_infinite_learning_rate_is_refused():
    with pytest.raises(ValueError, match="finite number > 0, got inf"):
        load_config(Config, RECIPE, ["train.learning_rate=.inf"])


def test_an_override_cut_by_a_yaml_comment_is_refused():
    with pytest.raises(ConfigError, match="comment, so the value would be 'runs/a'"):
        apply_overrides({}, ["output_dir=runs/a #2"])
    assert apply_overrides({}, ['output_dir="runs/a #2"'])["output_dir"] == "runs/a #2"
    assert apply_overrides({}, ["output_dir=runs/a#2"])["output_dir"] == "runs/a#2"
