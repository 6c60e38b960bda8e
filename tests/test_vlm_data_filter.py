"""`data.filter` in a recipe: the VLM recipe keeps exactly the rows `mmalign data diagnose
--filter` keeps on the same data and model; a bad filter or a diffusion recipe fails at load."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk
from test_vlm_train import _Accel, vlm_config

from mmalign.config import ConfigError, from_dict
from mmalign.train import Config
from mmalign.train.loop import RUN_FILE, train
from mmalign.vlm.recipe import VLMRecipe


def texts(row) -> tuple[str, str, str]:
    return str(row["prompt"]), str(row["chosen"]), str(row["rejected"])


def test_recipe_keeps_the_rows_diagnose_keeps(tmp_path, capsys):
    from mmalign.cli import main
    from mmalign.toy.cache import toy_pairs

    spec = "ln_ches:keep_lowest=0.25"
    data = toy_pairs("safety", {"n": 24})  # the rows the recipe's toy:safety {n: 24} opens
    out = tmp_path / "diag"
    code = main(["data", "diagnose", str(data), "--model", "toy:vlm", "--out", str(out),
                 "--filter", spec, "--max-length", "44"])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    expected = [texts(r) for r in load_from_disk(str(out / "filtered"))]
    assert 0 < len(expected) < summary["pairs"]

    cfg = vlm_config(tmp_path / "run", data={"filter": spec}, vlm={"max_length": 44},
                     train={"max_steps": 1, "checkpoint_every": 1})  # fmt: skip
    recipe = VLMRecipe(cfg, _Accel())
    got = [texts(recipe.dataset[i][1]) for i in range(len(recipe.dataset))]
    assert got == expected
    too_long = recipe.describe()["skipped"].get("too_long", 0)
    assert too_long > 0  # the filter ranks only the rows that fit, in both
    assert too_long == summary["skipped"].get("too_long", 0)
    dropped = summary["pairs"] - len(expected)
    assert recipe.describe()["filter"]["dropped"] == dropped
    assert f"kept {len(expected)} of {summary['pairs']} rows, dropped {dropped}" in (
        capsys.readouterr().out
    )

    train(cfg, VLMRecipe)
    run = json.loads((tmp_path / "run" / RUN_FILE).read_text())
    assert run["filter"] == {**recipe.describe()["filter"], "seconds": run["filter"]["seconds"]}
    assert run["rows"] == len(expected) and run["config"]["data"]["filter"] == spec


@pytest.mark.parametrize(
    ("spec", "named"),
    [("ln_chess:keep_lowest=0.05", "did you mean 'ln_ches'"),
     ("ln_ches:keep_lowst=0.05", "did you mean 'keep_lowest'"),
     ("ln_ches:keep_lowest=5", r"fraction in \(0, 1\]")],
)  # fmt: skip
def test_a_bad_filter_is_a_config_error_naming_it(tmp_path, spec, named):
    with pytest.raises(ConfigError, match=named) as err:
        vlm_config(tmp_path, data={"filter": spec})
    assert str(err.value).startswith(f"data.filter: filter {spec!r}")


def test_diffusion_refuses_data_filter():
    raw = {
        "model": {"name_or_path": "toy:sd", "kind": "diffusion"},
        "data": {"path": "toy:pairs", "split": "train", "filter": "ln_ches:keep_lowest=0.05"},
    }
    with pytest.raises(ConfigError, match=r"data\.filter: .* needs model\.kind: vlm"):
        from_dict(Config, raw)
