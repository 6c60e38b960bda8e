"""`mmalign data prism-mcts` refuses a resume whose settings differ from the saved search's
(`search.json`). The settings known from the arguments and the data (search config, batching,
seed, rows, judge, sampling, device type, dtype) are compared before any model loads: an old
CPU search reopened on a GPU machine is refused at once, without loading the policy and a
`vlm:` judge onto the GPU first. The weights keys are compared too, read from the files
before loading (review 7, tests/test_review7_prism_checks.py), and once more after. A dtype
change is named as the dtype, not also as "other weights" (a weights key starts with the dtype
it loaded in)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from device_helpers import Stop, recorder
from test_prism_mcts import FakeGenerator, FakeJudge, rows

from mmalign.cli import main
from mmalign.config import InputError
from mmalign.vlm.prism.mcts import MCTSConfig
from mmalign.vlm.prism.search import Search


@pytest.fixture(scope="module")
def tagged_model(tmp_path_factory):
    """toy-vlm with PRISM's stage tags, saved as a folder (what `--model` names)."""
    from mmalign.vlm.load import load_vlm
    from mmalign.vlm.prism.format import add_stage_tokens

    folder = tmp_path_factory.mktemp("prism-model") / "model"
    vlm = load_vlm("toy:vlm")
    add_stage_tokens(vlm.model, vlm.processor)
    vlm.model.save_pretrained(folder)
    vlm.processor.save_pretrained(folder)
    return folder


def _args(model, out, judge: str = "toy") -> list[str]:
    return ["data", "prism-mcts", "--model", str(model), "--data", "toy:prism", "--judge", judge,
            "--out", str(out), "--max-samples", "2", "--iterations", "2",
            "--max-new-tokens", "4", "--device", "cpu"]  # fmt: skip


def _counted(monkeypatch) -> list[dict[str, Any]]:
    """Every `load_vlm` call (the policy's and a vlm: judge's) recorded, then stopped."""
    import mmalign.vlm.load

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.vlm.load, "load_vlm", recorder(calls))
    return calls


def _refused(argv: list[str], capsys) -> str:
    """The error of a refused run (exit 2); a run that got as far as loading a model fails."""
    capsys.readouterr()
    try:
        code = main(argv)
    except Stop:
        pytest.fail("a model was loaded before the resume was refused")
    assert code == 2
    return capsys.readouterr().err


def test_a_resume_on_another_device_or_dtype_is_refused_before_any_model_loads(
    tmp_path, tagged_model, monkeypatch, capsys
):
    out = tmp_path / "out"
    judge = f"vlm:{tagged_model}"
    assert main(_args(tagged_model, out, judge)) == 0  # a CPU float32 search
    calls = _counted(monkeypatch)
    err = _refused([*_args(tagged_model, out, judge), "--dtype", "bfloat16"], capsys)
    assert "dtype float32 -> bfloat16 (--dtype float32 resumes it)" in err
    assert calls == []
    # reopened on a GPU machine with the default --device auto: refused, naming --device cpu
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    argv = _args(tagged_model, out, judge)
    argv[argv.index("--device") + 1] = "auto"
    err = _refused(argv, capsys)
    assert "device cpu -> cuda (--device cpu resumes it)" in err
    assert calls == []


def test_other_search_settings_are_refused_before_any_model_loads(
    tmp_path, tagged_model, monkeypatch, capsys
):
    out = tmp_path / "out"
    assert main(_args(tagged_model, out)) == 0
    calls = _counted(monkeypatch)
    for extra, named in ((["--iterations", "3"], "config (iterations 2 -> 3)"),
                         (["--temperature", "0.5"], "temperature 1.0 -> 0.5"),
                         (["--seed", "1"], "seed 0 -> 1"),
                         (["--max-samples", "1"], "rows 2 -> 1"),
                         (["--judge", f"vlm:{tagged_model}"], "judge toy -> vlm:")):  # fmt: skip
        err = _refused([*_args(tagged_model, out), *extra], capsys)
        assert named in err
        assert "judge_weights" not in err  # another judge: its weights are not news
    # a search.json from before the model was recorded cannot show that it matches
    saved = json.loads((out / "search.json").read_text())
    del saved["model"]
    (out / "search.json").write_text(json.dumps(saved))
    assert "model (not recorded" in _refused(_args(tagged_model, out), capsys)
    assert calls == []


def test_the_same_settings_still_resume_with_a_vlm_judge(tmp_path, tagged_model, capsys):
    """The check before loading must not refuse a resume the full check accepts."""
    out = tmp_path / "out"
    judge = f"vlm:{tagged_model}"
    assert main(_args(tagged_model, out, judge)) == 0
    saved = json.loads((out / "search.json").read_text())
    assert "judge_weights" in saved and saved["judge"] == judge
    assert main(_args(tagged_model, out, judge)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trees_loaded"] == 2 and summary["this_run"]["samples"] == 0


def test_weights_retrained_in_place_are_still_refused_after_loading(tmp_path, tagged_model, capsys):
    """Other weights are refused (before loading since review 7; see test_review7_prism_checks)."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tagged_model, model)
    out = tmp_path / "out"
    assert main(_args(model, out)) == 0
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes())  # a new mtime: other weights to the key
    capsys.readouterr()
    assert main(_args(model, out)) == 2
    err = capsys.readouterr().err
    assert "model (other weights)" in err and "dtype" not in err


# ----------------------------------------------------------------- what a refusal names


def _judge(weights: tuple | None) -> FakeJudge:
    judge = FakeJudge()
    if weights is not None:  # a vlm: judge's loaded model (VLMJudge.vlm.weights_key)
        judge.vlm = SimpleNamespace(weights_key=weights)  # type: ignore[attr-defined]
    return judge


def _search(out, dtype: str, files: int = 1, judge_files: int = 1) -> Search:
    # a weights key as load_vlm gives it: the dtype first, then the source and its files
    model = (dtype, "policy", None, [["model.safetensors", 8, files]], None, [])
    judge = (dtype, "judge", None, [["model.safetensors", 8, judge_files]], None, [])
    return Search(rows(2), FakeGenerator(), _judge(judge), MCTSConfig(iterations=10, children=2),
                  out, trees_per_batch=2, progress=False, model=model,
                  precision={"device": "cpu", "dtype": dtype})  # fmt: skip


def test_a_dtype_change_is_named_as_the_dtype_not_as_other_weights(tmp_path):
    _search(tmp_path, "float32").run()
    with pytest.raises(InputError, match="new --out") as err:
        _search(tmp_path, "bfloat16").run()
    message = str(err.value)
    assert "dtype float32 -> bfloat16 (--dtype float32 resumes it)" in message
    assert "model" not in message.split("settings:")[1] and "weights" not in message


def test_other_weights_with_a_dtype_change_name_both(tmp_path):
    _search(tmp_path, "float32").run()
    with pytest.raises(InputError) as err:
        _search(tmp_path, "bfloat16", files=2).run()
    message = str(err.value)
    assert "dtype float32 -> bfloat16" in message and "model (other weights)" in message
    assert "judge_weights" not in message  # the judge's weights are its own again
    with pytest.raises(InputError) as err:
        _search(tmp_path, "bfloat16", judge_files=2).run()
    message = str(err.value)
    assert "judge_weights (other judge weights)" in message
    assert "model (other weights)" not in message
