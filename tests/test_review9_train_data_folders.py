"""Review 9: what `mmalign train` and `mmalign data diagnose` say of data that is no data.

An empty folder, a training output_dir, a `mmalign toy data` or `prism-mcts` output folder
(instead of its pairs/) and pairs of the other model's kind were tracebacks or late, unclear
messages; they are input errors naming the key and what to give instead, said before
anything loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset

from mmalign.config import InputError, load_config
from mmalign.data.schema import TEXT_PAIR_FEATURES
from mmalign.train import Config
from mmalign.train.sources import check_sources

ROOT = Path(__file__).resolve().parents[1]
VLM = str(ROOT / "configs/toy/vlm_dpo.yaml")
SD = str(ROOT / "configs/toy/dpo.yaml")


def _cfg(recipe: str, *overrides: str) -> Config:
    return load_config(Config, recipe, list(overrides))


def _problem(recipe: str, *overrides: str) -> str:
    with pytest.raises(InputError) as err:
        check_sources(_cfg(recipe, *overrides))
    return str(err.value)


def _text_pairs(folder: Path) -> Path:
    rows = {"prompt": ["q"], "chosen": ["a"], "rejected": ["b"], "label": [1.0], "source": [None]}
    Dataset.from_dict(rows, features=TEXT_PAIR_FEATURES).save_to_disk(str(folder))
    return folder


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = _problem(VLM, f"data.path={tmp_path / 'empty'}", "data.toy=null",
                   f"output_dir={tmp_path / 'run'}")  # fmt: skip
    assert "data.path" in out and "is an empty folder" in out


def test_empty_folder_in_the_reader(tmp_path: Path) -> None:
    from mmalign.vlm.data import open_vlm_pairs

    with pytest.raises(InputError, match=r"DATA .* is an empty folder"):
        open_vlm_pairs(str(tmp_path), "train", key="DATA")


def test_training_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    config = {"model": {"kind": "diffusion"}, "data": {"path": "toy:pairs"}}
    (run / "mmalign_run.json").write_text(json.dumps({"config": config, "task": "diffusion"}))
    out = _problem(VLM, f"data.path={run}", "data.toy=null", f"output_dir={tmp_path / 'o'}")
    assert "is a diffusion training run" in out and "not data" in out and "toy:pairs" in out
    from mmalign.diffusion.data import open_pairs

    with pytest.raises(InputError, match=r"DATA .* training run"):
        open_pairs(str(run), "train", key="DATA")


@pytest.mark.parametrize("marker", ["search.json", "summary.json"])
def test_output_folder_instead_of_its_pairs(tmp_path: Path, marker: str) -> None:
    _text_pairs(tmp_path / "pairs")
    (tmp_path / marker).write_text(json.dumps({"kind": "safety", "labels": {}}))
    out = _problem(VLM, f"data.path={tmp_path}", "data.toy=null", f"output_dir={tmp_path}/o")
    assert f"give {tmp_path / 'pairs'}" in out and "format=" not in out
    from mmalign.vlm.data import open_vlm_pairs

    with pytest.raises(InputError, match="not the pairs themselves"):
        open_vlm_pairs(str(tmp_path), "train", key="DATA")


def test_toy_kind_of_the_other_model_is_refused_before_building(tmp_path: Path) -> None:
    out = _problem(VLM, "data.path=toy:pairs", "data.toy=null", f"output_dir={tmp_path}")
    assert "toy:pairs holds image pairs (diffusion)" in out and "vlm recipe" in out
    out = _problem(SD, "data.path=toy:vqa", "data.toy=null", f"output_dir={tmp_path}")
    assert "toy:vqa holds text (VLM) pairs" in out and "vlm_dpo.yaml" in out


def test_every_toy_kind_has_a_pair_kind() -> None:
    from mmalign.toy.cache import PAIR_KINDS
    from mmalign.toy.datasets import KINDS

    assert set(PAIR_KINDS) == set(KINDS)


def test_saved_text_pairs_for_a_diffusion_recipe(tmp_path: Path) -> None:
    pairs = _text_pairs(tmp_path / "pairs")
    out = _problem(SD, f"data.path={pairs}", "data.toy=null", f"output_dir={tmp_path}/o")
    assert "holds text (VLM) pairs" in out and "model.kind: vlm recipe" in out
    from mmalign.diffusion.data import open_pairs

    with pytest.raises(InputError, match="holds text \\(VLM\\) pairs"):
        open_pairs(str(pairs), "train")


def test_no_advice_of_a_format_option() -> None:
    from mmalign.vlm.data import detect_format

    with pytest.raises(ValueError) as err:
        detect_format(["kind", "labels", "rows"])
    assert "format=" not in str(err.value)
