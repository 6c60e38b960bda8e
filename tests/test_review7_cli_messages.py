"""What train, data and invert commands told a newcomer, checked:

- summaries said "trained 1 steps", "1 pairs: ... 1 ties", "sample: 1 rows" (`words.plural`);
- `train.resume_from: latest` with no checkpoint in output_dir started from step 0 without a
  word (diffusers' and accelerate's examples print that they start a new run);
- `data user-embed toy:users` said "no saved pairs dataset (a folder from `mmalign toy data`)";
  a folder holding no dataset ended in a `datasets` traceback; `--out` naming an existing file
  failed after the model pass with "File exists", and `--out e.safetensors` made a folder of
  that name;
- `mmalign invert toy:flow` loaded the model, then said "mmalign trains
  StableDiffusionPipeline and StableDiffusionXLPipeline models; this one is a FlowModel"
  (mmalign trains flow models too; it is `invert` that does not take them);
- `data diagnose --filter ...` wrote `filtered/` and `states.safetensors` but its "wrote" line
  listed only pairs.parquet, summary.json and report.html.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from device_helpers import Stop, recorder
from test_train_review_resume import LinearRecipe, _config
from vlm_helpers import pair_rows

from mmalign.cli import main
from mmalign.data.smooth import describe, soft_labels
from mmalign.train.loop import TrainResult, train
from mmalign.words import plural


def test_plural():
    assert plural(1, "step") == "1 step"
    assert [plural(n, "row") for n in (0, 2)] == ["0 rows", "2 rows"]
    assert plural(1, "user embedding") == "1 user embedding"
    assert plural(3, "user embedding") == "3 user embeddings"
    assert plural(2, "child", "children") == "2 children"


def test_smooth_summary_of_one_pair():
    text = describe(soft_labels([0.5], [0.5], low=0.0, high=1.0))
    assert text.startswith("1 pair: 0 swapped") and "1 tie (p = 0.5" in text


def test_train_summary_of_one_step(tmp_path: Path, monkeypatch, capsys):
    import mmalign.train.loop

    result = TrainResult(tmp_path, 1, {}, {"path": str(tmp_path)}, 2.0)
    monkeypatch.setattr(mmalign.train.loop, "train", lambda cfg, recipe: result)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: {name_or_path: toy:sd}\ndata: toy_pairs\n")
    assert main(["train", str(recipe), f"output_dir={tmp_path / 'run'}"]) == 0
    assert "mmalign: trained 1 step in 2 s" in capsys.readouterr().out


# ------------------------------------------------------------------ resume_from: latest


NO_CHECKPOINT = "no checkpoint in {}; starting from step 0"


def test_resume_latest_without_a_checkpoint_says_it_starts_at_step_0(tmp_path, capsys):
    out = tmp_path / "run"
    train(_config(out, max_steps=2, resume_from="latest"), LinearRecipe)
    assert f"mmalign: {NO_CHECKPOINT.format(out)}" in capsys.readouterr().err
    train(_config(out, max_steps=4, resume_from="latest"), LinearRecipe)  # it has one now
    err = capsys.readouterr().err
    assert "no checkpoint in" not in err


def test_a_run_without_resume_from_says_nothing_of_it(tmp_path, capsys):
    train(_config(tmp_path / "run", max_steps=2), LinearRecipe)
    assert "no checkpoint in" not in capsys.readouterr().err


# ------------------------------------------------------------------ data user-embed


@pytest.fixture
def vlm_calls(monkeypatch) -> list[dict[str, Any]]:
    """The VLM replaced by a recorder: every refusal below comes before it is touched."""
    import mmalign.vlm.load

    # imported first under the patch, user_embed kept the recorder as its VLMRef for the rest
    # of the session (test_ppd_eval failed after this file): imported before it
    import mmalign.vlm.user_embed

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.vlm.load, "VLMRef", recorder(calls))
    return calls


def _users(tmp_path: Path) -> Path:
    folder = tmp_path / "users"
    assert main(["toy", "data", "users", "--n", "4", "--out", str(folder)]) == 0
    return folder


def _embed_error(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(["data", "user-embed", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_user_embed_of_a_toy_spec_says_what_to_give(vlm_calls, capsys):
    err = _embed_error(["toy:users"], capsys)
    assert "toy:users: user-embed reads a folder of per-user pairs" in err
    assert "mmalign toy data users --out DIR" in err
    assert vlm_calls == []


def test_user_embed_data_that_is_no_dataset(tmp_path: Path, vlm_calls, capsys):
    (tmp_path / "empty").mkdir()
    err = _embed_error([str(tmp_path / "empty")], capsys)
    assert f"{tmp_path / 'empty'}: no saved pairs dataset in it" in err
    (tmp_path / "f.json").write_text("{}")
    assert f"{tmp_path / 'f.json'} is a file" in _embed_error([str(tmp_path / "f.json")], capsys)
    assert "no such folder" in _embed_error([str(tmp_path / "none")], capsys)
    assert vlm_calls == []


def test_user_embed_out_is_a_folder(tmp_path: Path, vlm_calls, capsys):
    data = _users(tmp_path)
    (tmp_path / "taken.bin").write_text("x")
    err = _embed_error([str(data), "--out", str(tmp_path / "taken.bin")], capsys)
    assert f"--out {tmp_path / 'taken.bin'} is a file: --out is a folder" in err
    err = _embed_error([str(data), "--out", str(tmp_path / "e.safetensors")], capsys)
    assert "--out is a folder, for user_embeddings.safetensors" in err
    assert not (tmp_path / "e.safetensors").exists()
    assert vlm_calls == []
    with pytest.raises(Stop):  # a folder (existing or not) goes on to the model
        main(["data", "user-embed", str(data), "--out", str(tmp_path / "embs")])
    assert len(vlm_calls) == 1


# ------------------------------------------------------------------ invert


def test_invert_refuses_a_flow_model_before_loading_it(tmp_path: Path, monkeypatch, capsys):
    import mmalign.diffusion.load
    from mmalign.toy import render

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.diffusion.load, "load_pipeline", recorder(calls))
    prompt = "a small red circle on the left on a blue background"
    image = (render(prompt).permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "a.png")
    argv = ["invert", "toy:flow", "--image", str(tmp_path / "a.png"), "--prompt", prompt,
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "mmalign invert: toy:flow is a flow-matching (SD3 / FLUX) pipeline" in err
    assert "mmalign trains" not in err
    assert calls == []
    with pytest.raises(Stop):  # toy:sd goes on to load
        main([*argv[:1], "toy:sd", *argv[2:]])


# ------------------------------------------------------------------ data diagnose


def test_diagnose_lists_every_file_it_wrote(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    Dataset.from_list(pair_rows()).save_to_disk(str(tmp_path / "data"))
    out = tmp_path / "diag"
    argv = ["data", "diagnose", str(tmp_path / "data"), "--model", "toy:vlm", "--out", str(out),
            "--batch-size", "2", "--filter", "ln_ches:keep_lowest=0.5"]  # fmt: skip
    assert main(argv) == 0
    line = re.search(r"^wrote .*\((.*)\)$", capsys.readouterr().out, re.M)
    assert line is not None
    listed = line.group(1).split(", ")
    on_disk = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
    assert sorted(listed) == on_disk
    assert {"filtered/", "states.safetensors"} <= set(listed)
