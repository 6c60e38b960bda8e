"""`data.filter` in a recipe: the VLM recipe keeps exactly the rows `mmalign data diagnose
--filter` keeps on the same data and model; a restart reads the filter's states from the cache
(no model pass) and a damaged entry is an error; a bad filter or a diffusion recipe fails at
load."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk
from test_vlm_train import _Accel, vlm_config

from mmalign.config import ConfigError, InputError, from_dict
from mmalign.train import Config
from mmalign.train.loop import RUN_FILE, train
from mmalign.vlm.recipe import VLMRecipe


def texts(row) -> tuple[str, str, str]:
    return str(row["prompt"]), str(row["chosen"]), str(row["rejected"])


def test_recipe_keeps_the_rows_diagnose_keeps(tmp_path, capsys):
    import torch

    from mmalign.cli import main
    from mmalign.toy.cache import toy_pairs
    from mmalign.vlm.diagnose_states import STATES_FILE, StatesKey, load_states

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
    # the recipe computes its own states (the cache entry diagnose stored is removed), and
    # they are the ones diagnose wrote: one cache entry serves both
    theirs = load_states(out / STATES_FILE, "t")
    entry = StatesKey(*(theirs.meta[k] for k in ("model", "model_name", "pairs", "tokens")))
    entry.path().unlink()
    capsys.readouterr()
    recipe = VLMRecipe(cfg, _Accel())
    printed = capsys.readouterr().out
    assert "from the cache" not in printed
    mine = load_states(entry.path(), "t")
    assert mine.meta == theirs.meta
    for name, value in theirs.tensors.items():
        if name != "row":  # the recipe numbers the rows that fit, diagnose all rows
            assert torch.allclose(mine.tensors[name], value, rtol=1e-9, atol=1e-9), name
    got = [texts(recipe.dataset[i][1]) for i in range(len(recipe.dataset))]
    assert got == expected
    too_long = recipe.describe()["skipped"].get("too_long", 0)
    assert too_long > 0  # the filter ranks only the rows that fit, in both
    assert too_long == summary["skipped"].get("too_long", 0)
    dropped = summary["pairs"] - len(expected)
    assert recipe.describe()["filter"]["dropped"] == dropped
    assert f"kept {len(expected)} of {summary['pairs']} rows, dropped {dropped}" in printed

    train(cfg, VLMRecipe)
    run = json.loads((tmp_path / "run" / RUN_FILE).read_text())
    assert run["filter"] == {**recipe.describe()["filter"], "seconds": run["filter"]["seconds"]}
    assert run["rows"] == len(expected) and run["config"]["data"]["filter"] == spec


def test_a_restart_filters_from_the_cached_states_without_a_model_pass(tmp_path, capsys):
    """Every train start and resume used to rerun the model over the data; the second recipe
    here must not run a single forward to filter, and keeps the same rows."""
    from test_vlm_diagnose import no_forward

    from mmalign.vlm.diagnose import pair_key
    from mmalign.vlm.diagnose_states import PairStates, StatesKey, load_states, save_states

    cfg = vlm_config(tmp_path / "run", data={"filter": "ln_ches:keep_lowest=0.5"})
    first = VLMRecipe(cfg, _Accel())
    rows = [texts(first.dataset[i][1]) for i in range(len(first.dataset))]
    assert "from the cache" not in capsys.readouterr().out
    with no_forward() as calls:
        again = VLMRecipe(cfg, _Accel())
    assert calls == [] and "data.filter: CHES states from the cache" in capsys.readouterr().out
    assert [texts(again.dataset[i][1]) for i in range(len(again.dataset))] == rows
    assert again.describe()["filter"]["kept"] == first.describe()["filter"]["kept"]

    # a damaged entry (another hidden size): an InputError under data.filter, naming both
    vlm = first.vlm
    keys = [pair_key(first.rows[i]) for i in range(len(first.rows))]
    path = StatesKey.of(vlm.weights_key, keys, vlm.processor).path()
    good = load_states(path, "test")
    sums = {k: v[:, :-1] for k, v in good.tensors.items() if k.endswith("_sum")}
    save_states(path, PairStates({**good.tensors, **sums}, {**good.meta, "hidden_size": "127"}))
    with pytest.raises(InputError) as err:
        VLMRecipe(cfg, _Accel())
    assert str(err.value).startswith(f"data.filter: cached CHES states {path}")
    assert "hidden size 127" in str(err.value) and "hidden size 128" in str(err.value)


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
