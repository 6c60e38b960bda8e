"""`mmalign data prism-mcts` runs its policy and a `vlm:` judge on `--device` (default `auto`:
CUDA where torch sees it) in `--dtype` (default float32), both on the same device. The device
type and dtype are search settings (`search.json`): the same seed samples other trees on a GPU
or in bfloat16, so a rerun on another device is refused, naming it. A search saved before they
were recorded was searched on the CPU in float32 and still resumes there.

The loaders are replaced by recorders that stop the command, so nothing loads or moves."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from device_helpers import Stop, recorder
from test_prism_mcts import FakeGenerator, FakeJudge, rows

from mmalign.cli import main
from mmalign.config import InputError
from mmalign.vlm.prism.mcts import MCTSConfig
from mmalign.vlm.prism.search import Search

MCTS = ["data", "prism-mcts", "--model", "toy:vlm", "--data", "toy:prism", "--judge",
        "vlm:toy:vlm", "--max-samples", "1"]  # fmt: skip


def test_the_policy_and_the_vlm_judge_load_on_the_resolved_device(
    tmp_path, monkeypatch, pretend_cuda
):
    import mmalign.vlm.prism.cli as prism_cli
    import mmalign.vlm.prism.format as prism_format
    import mmalign.vlm.prism.judges as judges

    policy: list[dict[str, Any]] = []
    judge: list[dict[str, Any]] = []
    fake = SimpleNamespace(model=None, processor=None)
    monkeypatch.setattr(prism_cli, "load_policy", recorder(policy, fake, stop=False))
    monkeypatch.setattr(prism_format, "tag_ids", lambda processor: {})
    monkeypatch.setattr(judges, "make_judge", recorder(judge))
    with pytest.raises(Stop):
        main([*MCTS, "--out", str(tmp_path / "a"), "--dtype", "bfloat16"])
    assert str(policy[0]["device"]) == "cuda" and policy[0]["dtype"] == "bfloat16"
    assert judge[0]["args"] == ("vlm:toy:vlm",)
    assert str(judge[0]["device"]) == "cuda" and judge[0]["dtype"] == "bfloat16"
    policy.clear(), judge.clear()
    with pytest.raises(Stop):
        main([*MCTS, "--out", str(tmp_path / "b"), "--device", "cpu"])
    assert str(policy[0]["device"]) == "cpu" and policy[0]["dtype"] == "float32"
    assert str(judge[0]["device"]) == "cpu" and judge[0]["dtype"] == "float32"


def test_load_policy_and_make_judge_hand_load_vlm_the_device(monkeypatch):
    import mmalign.vlm.load
    from mmalign.vlm.prism.cli import load_policy
    from mmalign.vlm.prism.judges import make_judge

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.vlm.load, "load_vlm", recorder(calls))
    with pytest.raises(Stop):
        load_policy("toy:vlm", dtype="float16", device=torch.device("cuda"))
    with pytest.raises(Stop):
        make_judge("vlm:toy:vlm", dtype="bfloat16", device=torch.device("cuda"))
    assert [(c["args"], str(c["device"]), c["dtype"]) for c in calls] == [
        (("toy:vlm",), "cuda", "float16"),
        (("toy:vlm",), "cuda", "bfloat16"),
    ]


def test_device_cuda_without_cuda_exits_2_before_anything_loads(tmp_path, monkeypatch, capsys):
    import mmalign.vlm.load

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.vlm.load, "load_vlm", recorder(calls))
    assert main([*MCTS, "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "--device cuda: torch sees no CUDA GPU" in capsys.readouterr().err
    assert calls == [] and not (tmp_path / "o").exists()


# ----------------------------------------------------------------- the saved settings


def _search(out, precision=None) -> Search:
    return Search(rows(2), FakeGenerator(), FakeJudge(), MCTSConfig(iterations=10, children=2),
                  out, trees_per_batch=2, progress=False, precision=precision)  # fmt: skip


def test_the_device_and_dtype_are_search_settings(tmp_path):
    _search(tmp_path).run()
    saved = json.loads((tmp_path / "search.json").read_text())
    assert saved["device"] == "cpu" and saved["dtype"] == "float32"  # no model: as before
    again = _search(tmp_path, {"device": "cpu", "dtype": "float32"})
    again.run()
    assert again.counts["trees_loaded"] == 2 and again.counts["samples"] == 0
    with pytest.raises(InputError, match="new --out") as err:
        _search(tmp_path, {"device": "cuda", "dtype": "float32"}).run()
    assert "device cpu -> cuda" in str(err.value) and "--device cpu" in str(err.value)
    with pytest.raises(InputError, match=r"dtype float32 -> bfloat16"):
        _search(tmp_path, {"device": "cpu", "dtype": "bfloat16"}).run()


def test_a_search_saved_before_device_and_dtype_were_recorded_resumes_on_cpu_float32(tmp_path):
    _search(tmp_path).run()
    path = tmp_path / "search.json"
    old = json.loads(path.read_text())
    del old["device"], old["dtype"]
    path.write_text(json.dumps(old))
    resumed = _search(tmp_path, {"device": "cpu", "dtype": "float32"})
    resumed.run()
    assert resumed.counts["trees_loaded"] == 2 and resumed.counts["samples"] == 0
    with pytest.raises(InputError, match=r"device cpu -> cuda"):  # it was searched on the CPU
        _search(tmp_path, {"device": "cuda", "dtype": "float32"}).run()


def test_the_cli_resumes_an_old_search_on_cpu_float32(tmp_path, capsys):
    """`prism-mcts` end to end on toy-vlm: its search.json records where it ran; with those
    keys taken out (a search saved before them) the rerun on the CPU in float32 loads every
    tree, and a rerun in bfloat16 is refused naming the dtype."""
    from mmalign.vlm.load import load_vlm
    from mmalign.vlm.prism.format import add_stage_tokens

    vlm = load_vlm("toy:vlm")
    add_stage_tokens(vlm.model, vlm.processor)
    vlm.model.save_pretrained(tmp_path / "model")
    vlm.processor.save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    args = ["data", "prism-mcts", "--model", str(tmp_path / "model"), "--data", "toy:prism",
            "--judge", "toy", "--out", str(out), "--max-samples", "2", "--iterations", "2",
            "--max-new-tokens", "4", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    saved = json.loads((out / "search.json").read_text())
    assert (saved["device"], saved["dtype"]) == ("cpu", "float32")
    del saved["device"], saved["dtype"]
    (out / "search.json").write_text(json.dumps(saved))
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trees_loaded"] == 2 and summary["this_run"]["samples"] == 0
    capsys.readouterr()
    assert main([*args, "--dtype", "bfloat16"]) == 2
    assert "dtype float32 -> bfloat16" in capsys.readouterr().err
