"""Review 6: a scorer's files are checked before any heavy work, and one option gives them.

`eval winrate` drew every base and tuned image, then failed because PickScore was not in the
cache (offline). Its error suggested `pickscore processor=` and `--scorer-path pickscore
(path=)`, neither of which a command takes, and no command could point PickScore at a local
processor (`data smooth`, whose default scorer is pickscore, had no `--scorer-path` at all).
Now every scorer's files are checked at once before the models load (rewards/files.py), and
`--scorer-path NAME=PATH` / `NAME:OPTION=PATH` gives them in `eval winrate`, `eval accuracy`,
`data smooth` and a recipe's `data.smooth.scorer_path`.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_smpo_labels import grey

import mmalign.diffusion as diffusion
from mmalign.cli import main
from mmalign.config import InputError
from mmalign.rewards import get_scorer, tiny


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No hub, an empty cache: every default scorer id is missing."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))


@pytest.fixture
def no_models(monkeypatch):
    """Loading a diffusion model fails the test: the check must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a diffusion model was loaded before the scorer files were checked")

    monkeypatch.setattr(diffusion, "load_pipeline", refuse)
    monkeypatch.setattr(diffusion, "load_tuned", refuse)


def _pickscore_folder(tmp_path):
    """A tiny PickScore saved as one folder: the model and its processor side by side."""
    model, processor = tiny.save_pickscore(tmp_path / "parts")
    both = tmp_path / "pickscore"
    shutil.copytree(model, both)
    shutil.copytree(processor, both, dirs_exist_ok=True)
    return both, model, processor


def test_eval_winrate_names_a_missing_scorer_before_any_model_loads(
    tmp_path, offline, no_models, capsys
):
    out = tmp_path / "eval"
    code = main(["eval", "winrate", "--tuned", str(tmp_path), "--base", "some/base", "--n", "2",
                 "--scorers", "pickscore,hpsv2", "--out", str(out)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    # every missing file at once, each with the option that exists to give it
    assert "pickscore's model yuvalkirstain/PickScore_v1 is not in the local cache" in err
    assert "give a local copy with --scorer-path pickscore=DIR" in err
    assert "give a local copy with --scorer-path pickscore:processor=DIR" in err
    assert "HPS_v2.1_compressed.pt from xswu/HPSv2" in err
    assert "--scorer-path hpsv2=PATH" in err
    assert "(path=)" not in err and "pickscore processor=" not in err
    assert not (out / "images").exists()


def test_a_local_scorer_path_that_does_not_exist_fails_first(tmp_path, no_models, capsys):
    code = main(["eval", "winrate", "--tuned", str(tmp_path), "--base", "some/base",
                 "--scorers", "pickscore", "--scorer-path", f"pickscore={tmp_path / 'nope'}",
                 "--out", str(tmp_path / "eval")])  # fmt: skip
    assert code == 2
    assert f"pickscore's model: {tmp_path / 'nope'} does not exist" in capsys.readouterr().err


def test_run_winrate_checks_scorer_files_before_drawing(tmp_path, offline):
    from mmalign.diffusion import tiny_sd_pipeline
    from mmalign.eval.winrate import run_winrate

    pipes = tiny_sd_pipeline(seed=0), tiny_sd_pipeline(seed=1)
    with pytest.raises(InputError, match="pickscore's processor laion/CLIP-ViT-H-14"):
        run_winrate(*pipes, ["a red circle"], ["pickscore"], tmp_path / "eval", steps=1,
                    batch_size=1, report=False)  # fmt: skip
    assert not (tmp_path / "eval" / "images").exists()


def test_scorer_path_spellings():
    from mmalign.rewards.files import parse_scorer_paths

    names = ["pickscore", "hpsv2:v2.1", "imagereward"]
    got = parse_scorer_paths(
        ["pickscore=/m", "pickscore:processor=/p", "hpsv2=/h.pt", "imagereward:tokenizer=/t"],
        names,
    )
    assert got == {
        "pickscore": {"path": "/m", "processor": "/p"},
        "hpsv2:v2.1": {"path": "/h.pt"},  # `hpsv2` is the same scorer
        "imagereward": {"tokenizer": "/t"},
    }
    with pytest.raises(InputError, match="pickscore has no file option 'tokenizer'"):
        parse_scorer_paths(["pickscore:tokenizer=/t"], names)
    with pytest.raises(InputError, match="toy:fidelity takes no --scorer-path"):
        parse_scorer_paths(["toy:fidelity=/x"], ["toy:fidelity"])
    with pytest.raises(InputError, match="clip is not among the scorers"):
        parse_scorer_paths(["clip=/x"], names)


def test_pickscore_from_one_folder_or_a_separate_processor(tmp_path, offline):
    from mmalign.rewards.files import require_scorer_files

    both, model, processor = _pickscore_folder(tmp_path)
    require_scorer_files({"pickscore": {"path": str(both)}})  # nothing from the hub
    x = torch.rand(2, 3, 32, 32)
    one = get_scorer("pickscore", path=both).score(x, ["a cat", "a dog"])
    two = get_scorer("pickscore", path=model, processor=processor).score(x, ["a cat", "a dog"])
    assert one.tolist() == pytest.approx(two.tolist())
    with pytest.raises(InputError, match="--scorer-path pickscore:processor=DIR"):
        require_scorer_files({"pickscore": {"path": str(model)}})  # no processor beside it


def test_eval_accuracy_takes_a_pickscore_processor(tmp_path, offline, capsys):
    _, model, processor = _pickscore_folder(tmp_path)
    out = tmp_path / "acc.json"
    code = main(["eval", "accuracy", "--data", "toy:pairs:1", "--max-rows", "4", "--threshold",
                 "0", "--scorer", "pickscore", "--scorer-device", "cpu", "--scorer-path",
                 f"pickscore={model}", "--scorer-path", f"pickscore:processor={processor}",
                 "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["scorer"] == "pickscore"


def _pairs(tmp_path):
    from mmalign.data.schema import write_pairs

    rows = [{"prompt": f"p{i}", "chosen": grey(40 * i + 20), "rejected": grey(200 - 40 * i)}
            for i in range(3)]  # fmt: skip
    write_pairs(rows, tmp_path / "pairs", "image")
    return tmp_path / "pairs"


def test_data_smooth_takes_scorer_path(tmp_path, offline, capsys):
    both, _, _ = _pickscore_folder(tmp_path)
    pairs = _pairs(tmp_path)
    out = tmp_path / "smoothed"
    code = main(["data", "smooth", str(pairs), "--scorer", "pickscore", "--device", "cpu",
                 "--scorer-path", f"pickscore={both}", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "smooth.json").read_text())["pairs"] == 3
    # without it, offline: the error names the option data smooth has
    code = main(["data", "smooth", str(pairs), "--out", str(tmp_path / "again")])
    assert code == 2
    err = capsys.readouterr().err
    assert "give a local copy with --scorer-path pickscore=DIR" in err


def test_a_recipe_gives_the_files_in_data_smooth_scorer_path(tmp_path, offline):
    from mmalign.data.schema import load_pairs
    from mmalign.diffusion.smooth import smoothed_rows

    class Main:
        is_main_process = True

        def wait_for_everyone(self) -> None:
            pass

    both, _, _ = _pickscore_folder(tmp_path)
    rows = load_pairs(_pairs(tmp_path))
    spec = {"scorer": "pickscore", "device": "cpu", "scorer_path": [f"pickscore={both}"]}
    smoothed, report = smoothed_rows(rows, spec, Main())
    assert len(smoothed) == 3 and report.scorer == "pickscore"
    with pytest.raises(InputError, match=r"data.smooth.scorer_path: \[pickscore=DIR\]"):
        smoothed_rows(rows, {"scorer": "pickscore", "device": "cpu"}, Main())
