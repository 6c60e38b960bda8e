"""Review 6: empty and unusable data refused by name, recipe keys checked when the recipe loads.

- A dataset saved from 0 rows (what `mmalign data prism-mcts` writes when its search emits no
  pairs) crashed `load_from_disk` with an IndexError; it is now an InputError naming the key
  (data.path, DATA) and saying it holds 0 rows (for a prism-mcts output: the search emitted
  none). Data whose every row validation skips says so with the count per reason.
- `validation.prompts`, `data.smooth.scorer` and `diffusion.dense.scorer` are checked when the
  recipe loads (they failed after training / after the models loaded).
- `data.split` other than train for toy data is refused (it was ignored).
- PPD with fewer pairs per user than `ppd.shots` names the recipe keys, before pre-encoding.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from datasets import Dataset, DatasetDict
from PIL import Image

from mmalign.config import ConfigError, InputError, load_config
from mmalign.data.prompts import resolve_prompts
from mmalign.data.saved import load_saved
from mmalign.data.schema import pair_features
from mmalign.diffusion.data import open_pairs
from mmalign.train import Config
from mmalign.vlm.data import open_vlm_pairs

TOY = Path(__file__).resolve().parents[1] / "configs" / "toy"


def _empty(kind: str, folder: Path) -> Path:
    """A PreferencePair dataset of 0 rows, saved as the project writes one."""
    features = pair_features(kind)  # type: ignore[arg-type]
    Dataset.from_dict({k: [] for k in features}, features=features).save_to_disk(str(folder))
    return folder


# ------------------------------------------------------------------ 1. empty / all-skipped data


def test_an_empty_saved_folder_opens_as_the_empty_dataset_of_its_columns(tmp_path):
    ds = load_saved(_empty("text", tmp_path / "e"))
    assert isinstance(ds, Dataset) and len(ds) == 0
    assert {"prompt", "chosen", "rejected"} <= set(ds.column_names)
    # a DatasetDict with one empty split: the other one still opens
    full = Dataset.from_dict({"prompt": ["p"], "chosen": ["a"], "rejected": ["b"]})
    empty = Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []}, features=full.features)
    DatasetDict({"train": full, "test": empty}).save_to_disk(str(tmp_path / "dd"))
    both = load_saved(tmp_path / "dd")
    assert len(both["train"]) == 1 and len(both["test"]) == 0


def test_vlm_pairs_saved_empty_are_refused_naming_the_key(tmp_path):
    folder = _empty("text", tmp_path / "pairs")
    with pytest.raises(InputError, match=r"data\.path .*pairs holds 0 rows"):
        open_vlm_pairs(str(folder), "train", key="data.path")


def test_an_empty_prism_mcts_output_says_the_search_emitted_no_pairs(tmp_path):
    run = tmp_path / "mcts"
    _empty("text", run / "pairs")
    (run / "search.json").write_text("{}")
    summary = {"trees": 8, "pairs": 0, "failures": {"unclosed": 24, "judge_error": 0}}
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(InputError) as err:
        open_vlm_pairs(str(run / "pairs"), "train", key="data.path")
    message = str(err.value)
    assert "holds 0 rows" in message and "prism-mcts" in message
    assert "8 tree(s) emitted no pairs" in message and "unclosed 24" in message
    assert "judge_error" not in message  # only the failures that happened


def test_diffusion_pairs_saved_empty_are_refused_naming_the_key(tmp_path):
    folder = _empty("image", tmp_path / "img")
    with pytest.raises(InputError, match=r"data\.path .*img holds 0 rows"):
        open_pairs(str(folder), "train")
    with pytest.raises(InputError, match=r"^DATA .*img holds 0 rows"):
        open_pairs(str(folder), "train", key="DATA")


def test_an_empty_json_file_is_refused_naming_the_key(tmp_path):
    (tmp_path / "rows.json").write_text("[]")
    with pytest.raises(InputError, match=r"DATA .*rows\.json holds 0 rows"):
        open_vlm_pairs(str(tmp_path / "rows.json"), "train", key="DATA")


def test_every_row_skipped_is_refused_with_the_count_per_reason(tmp_path):
    Dataset.from_dict(
        {"prompt": ["a", "b", "c"], "chosen": ["x", None, "z"], "rejected": ["y", "y", None],
         "label": [3.0, 1.0, 1.0]}
    ).save_to_disk(str(tmp_path / "bad"))  # fmt: skip
    with pytest.raises(InputError) as err:
        open_vlm_pairs(str(tmp_path / "bad"), "train", key="data.path")
    message = str(err.value)
    assert "skipped every one of its 3 rows" in message
    for reason in ("bad_label: 1", "missing_chosen: 1", "missing_rejected: 1"):
        assert reason in message


def test_every_image_pair_undecodable_is_refused_with_its_reason(tmp_path):
    from datasets import Image as ImageFeature

    good = Image.new("RGB", (8, 8))
    import io

    buf = io.BytesIO()
    good.save(buf, "PNG")
    rows = Dataset.from_dict({
        "prompt": ["a", "b"], "chosen": [{"bytes": b"junk", "path": None}] * 2,
        "rejected": [{"bytes": buf.getvalue(), "path": None}] * 2,
    })  # fmt: skip
    for name in ("chosen", "rejected"):
        rows = rows.cast_column(name, ImageFeature(decode=False))
    rows.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(
        InputError, match=r"skipped every one of its 2 rows(.|\n)*undecodable_chosen: 2"
    ):
        open_pairs(str(tmp_path / "bad"), "train")


def test_diagnose_of_an_empty_dataset_exits_2_naming_data(tmp_path, capsys):
    from mmalign.cli import main

    folder = _empty("text", tmp_path / "e")
    code = main(["data", "diagnose", str(folder), "--model", "toy:vlm", "--out",
                 str(tmp_path / "out")])  # fmt: skip
    assert code == 2
    assert "DATA" in capsys.readouterr().err and not (tmp_path / "out").exists()


# ------------------------------------------------------------------ 2. keys checked on load


def _recipe(name: str, *overrides: str) -> Config:
    return load_config(Config, TOY / name, list(overrides))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("toy:heldout:abc", r"validation\.prompts: .*N must be a whole number.*'abc'"),
        ("toy:held:4", r"validation\.prompts: .*did you mean 'heldout'"),
        ("toy:heldout:0", r"validation\.prompts: .*N must be >= 1"),
        ("tyo:heldout:8", r"validation\.prompts: .*did you mean 'toy:heldout:8'"),
    ],
)
def test_a_bad_validation_prompts_spec_fails_when_the_recipe_loads(spec, expected):
    with pytest.raises(ConfigError, match=expected):
        _recipe("dpo.yaml", f"validation.prompts={spec}")


def test_good_prompt_specs_pass_and_resolve_as_before(tmp_path):
    from mmalign.data.prompts import check_prompts

    for spec in (
        "toy:heldout",
        "toy:heldout:8",
        "toy:train:3",
        "pickapic:test_unique",
        str(tmp_path / "later.txt"),
    ):  # fmt: skip  (a file is the command's to check)
        check_prompts(spec)
    for spec in ("pickapic:", "parti:"):  # (a recipe's YAML reads these as a mapping)
        with pytest.raises(ValueError, match="name the"):
            check_prompts(spec)
    assert len(resolve_prompts("toy:train:3")) == 3
    with pytest.raises(ValueError, match="whole number"):  # eval --prompts reads it so too
        resolve_prompts("toy:heldout:abc")


def test_a_misspelt_smoothing_scorer_fails_when_the_recipe_loads():
    with pytest.raises(ConfigError, match=r"data\.smooth\.scorer: .*did you mean 'toy:fidelity'"):
        _recipe("dpo.yaml", "data.smooth.scorer=toy:fidelty")
    with pytest.raises(ConfigError, match=r"data\.smooth\.scorer: .*did you mean 'warm'"):
        _recipe("dpo.yaml", "data.smooth.scorer=toy:user:wram")
    _recipe("dpo.yaml", "data.smooth.scorer=pickscore")  # a model scorer: no weights read now


def test_a_dense_scorer_without_heatmaps_fails_when_the_recipe_loads():
    with pytest.raises(ConfigError, match=r"diffusion\.dense\.scorer: .*did you mean 'toy:flaws'"):
        _recipe("dense_dpo.yaml", "diffusion.dense.scorer=toy:flawz")
    with pytest.raises(ConfigError, match=r"diffusion\.dense\.scorer: 'toy:fidelity' is no"):
        _recipe("dense_dpo.yaml", "diffusion.dense.scorer=toy:fidelity")
    for fine in ("toy:flaws", "dense:runs/a-head"):  # a head's folder: checked at the start
        assert _recipe("dense_dpo.yaml", f"diffusion.dense.scorer={fine}").diffusion.dense


def test_a_missing_validation_prompts_file_is_named_before_training(tmp_path):
    from mmalign.train.sources import check_sources

    cfg = _recipe("dpo.yaml", f"validation.prompts={tmp_path / 'none.txt'}",
                  f"output_dir={tmp_path / 'run'}")  # fmt: skip
    with pytest.raises(InputError, match=r"validation\.prompts: .*none\.txt does not exist"):
        check_sources(cfg)
    (tmp_path / "none.txt").write_text("a prompt\n")
    check_sources(cfg)


# ------------------------------------------------------------------ 3. toy data is not split


def test_a_split_of_toy_data_is_refused_not_ignored():
    with pytest.raises(ConfigError, match=r"data\.split: test: toy data is built, not split"):
        _recipe("dpo.yaml", "data.split=test")
    with pytest.raises(ConfigError, match=r"data\.toy\.prompt_split: heldout"):
        _recipe("vlm_dpo.yaml", "data.split=validation")
    assert _recipe("dpo.yaml", "data.split=train").data.split == "train"


# ------------------------------------------------------------------ 4. PPD shots


def _user_rows(per_user: dict[str, int], tied: int = 0) -> Dataset:
    users = [u for u, n in per_user.items() for _ in range(n)]
    labels = [1.0] * len(users)
    labels[:tied] = [0.5] * tied
    return Dataset.from_dict({"prompt": ["p"] * len(users), "user_id": users, "label": labels})


def test_ppd_with_too_few_pairs_per_user_names_the_recipe_keys():
    from mmalign.diffusion.ppd_recipe import check_user_rows

    cfg = _recipe("ppd.yaml", "data.toy.n=64")
    with pytest.raises(ConfigError) as err:
        check_user_rows(cfg, _user_rows({"t00": 1, "t01": 4}))
    message = str(err.value)
    assert message.startswith("ppd.shots: 1 user(s)") and "t00 (1)" in message
    assert "lower ppd.shots" in message and "data.toy.n (now 64)" in message
    assert "n >= 512" in message and "--shots" not in message  # 128 train users x 4 shots
    check_user_rows(cfg, _user_rows({"t00": 4}))
    with pytest.raises(ConfigError, match=r"t00 \(3\)"):  # a tie shows no preference
        check_user_rows(cfg, _user_rows({"t00": 4}, tied=1))
    given = _recipe("ppd.yaml", "ppd.embeddings=/somewhere")
    check_user_rows(given, _user_rows({"t00": 1}))  # embeddings given: none computed here


def test_ppd_checks_its_users_when_the_rows_open_before_pre_encoding(monkeypatch):
    import mmalign.diffusion.recipe_base as base
    from mmalign.data.schema import ValidationReport
    from mmalign.diffusion.ppd_recipe import PPDRecipe

    rows = _user_rows({"t00": 2})
    monkeypatch.setattr(base, "open_pairs", lambda *a, **k: (rows, ValidationReport()))
    recipe = object.__new__(PPDRecipe)
    recipe.cfg = _recipe("ppd.yaml")
    recipe.accelerator = SimpleNamespace(is_main_process=True)
    with pytest.raises(ConfigError, match=r"ppd\.shots: 1 user\(s\)"):
        recipe._open_rows(None)
