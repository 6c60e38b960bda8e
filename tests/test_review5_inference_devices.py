"""`mmalign demo`'s win rate, `mmalign invert` and `mmalign data diagnose` run their models on
a GPU where there is one: `--device` (invert, diagnose) defaults to `auto` (CUDA where torch
sees it, else the CPU) instead of the CPU, and the demo evaluates where `auto` resolves. A
device the machine lacks is refused (exit 2, naming `--device`) before anything loads.
`data diagnose` also loads its models again: `vlm.cli.load_from_args` takes the parsed arguments,
and the old call `_load(model, adapter)` was a TypeError on every VLM diagnosis.

The loaders are replaced by recorders that stop the command, so nothing loads or moves."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from datasets import Dataset
from device_helpers import Stop, recorder
from PIL import Image
from vlm_helpers import pair_rows

from mmalign.cli import main


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ------------------------------------------------------------------------------ demo


@pytest.mark.parametrize(("cuda", "expected"), [(True, "cuda"), (False, "cpu")])
def test_the_demo_evaluates_where_auto_resolves(tmp_path, monkeypatch, cuda, expected):
    import mmalign.diffusion
    import mmalign.train.loop as loop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(loop, "train", lambda cfg, recipe: SimpleNamespace(steps=1, seconds=0))
    base: list[dict[str, Any]] = []
    tuned: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.diffusion, "load_pipeline", recorder(base, stop=False))
    monkeypatch.setattr(mmalign.diffusion, "load_tuned", recorder(tuned))
    from mmalign.demo import run_demo

    with pytest.raises(Stop):
        run_demo(tmp_path / "demo")
    assert str(base[0]["device"]) == expected and base[0].get("dtype", "float32") == "float32"
    assert tuned[0]["args"] == (tmp_path / "demo" / "train",)
    assert str(tuned[0]["device"]) == expected and tuned[0].get("dtype", "float32") == "float32"


# ---------------------------------------------------------------------------- invert


def _invert_args(tmp_path: Path) -> list[str]:
    image = tmp_path / "img.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    return ["invert", "toy:sd", "--image", str(image), "--prompt", "a red square",
            "--out", str(tmp_path / "out"), "--steps", "2", "--iterations", "1"]  # fmt: skip


def test_invert_loads_on_a_gpu_by_default(tmp_path, monkeypatch, pretend_cuda):
    import mmalign.diffusion.load

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.diffusion.load, "load_pipeline", recorder(calls))
    with pytest.raises(Stop):
        main(_invert_args(tmp_path))
    assert str(calls[0]["device"]) == "cuda"
    calls.clear()
    with pytest.raises(Stop):
        main([*_invert_args(tmp_path), "--device", "cpu"])
    assert str(calls[0]["device"]) == "cpu"


def test_invert_on_a_cpu_machine_loads_on_the_cpu(tmp_path, monkeypatch, no_cuda):
    import mmalign.diffusion.load

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.diffusion.load, "load_pipeline", recorder(calls))
    with pytest.raises(Stop):
        main(_invert_args(tmp_path))
    assert str(calls[0]["device"]) == "cpu"


# -------------------------------------------------------------------------- diagnose


def _vlm_data(tmp_path: Path) -> str:
    Dataset.from_list(pair_rows()).save_to_disk(str(tmp_path / "data"))
    return str(tmp_path / "data")


def test_diagnose_loads_model_and_reference_on_a_gpu_by_default(
    tmp_path, monkeypatch, pretend_cuda
):
    import mmalign.vlm.load

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.vlm.load, "load_vlm", recorder(calls))
    argv = ["data", "diagnose", _vlm_data(tmp_path), "--model", "toy:vlm", "--out",
            str(tmp_path / "diag")]  # fmt: skip
    with pytest.raises(Stop):
        main(argv)
    assert calls[0]["args"] == ("toy:vlm",) and str(calls[0]["device"]) == "cuda"
    calls.clear()
    with pytest.raises(Stop):  # the reference loads first, without --adapter, on the device
        main([*argv, "--reference", "ref-model", "--device", "cpu"])
    assert calls[0]["args"] == ("ref-model",) and calls[0]["adapter"] is None
    assert str(calls[0]["device"]) == "cpu"


def test_diagnose_of_diffusion_pairs_scores_on_the_resolved_device(
    tmp_path, monkeypatch, pretend_cuda
):
    import mmalign.eval.implicit

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.eval.implicit, "score_pairs", recorder(calls))
    argv = ["data", "diagnose", "toy:pairs", "--model", "toy:sd", "--out", str(tmp_path / "d")]
    with pytest.raises(Stop):
        main(argv)
    assert str(calls[0]["device"]) == "cuda"
    calls.clear()
    with pytest.raises(Stop):
        main([*argv, "--device", "cpu"])
    assert str(calls[0]["device"]) == "cpu"


def test_diagnose_runs_again_on_toy_vlm(tmp_path, monkeypatch):
    """The whole VLM diagnosis on the CPU, with a reference (both `_load` calls); its states
    cache of its own, so other tests of the same pairs still compute theirs."""
    import json

    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    argv = ["data", "diagnose", _vlm_data(tmp_path), "--model", "toy:vlm", "--out",
            str(tmp_path / "diag"), "--reference", "toy:vlm", "--batch-size", "2"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((tmp_path / "diag" / "summary.json").read_text())
    assert summary["pairs"] == 2 and summary["reference"] == summary["model"]
    # the same weights as their own reference: every implicit margin is 0, a tie (half credit)
    assert summary["implicit_accuracy"] == 0.5


# ------------------------------------------------------ a device the machine lacks


COMMANDS = {
    "invert": None,
    "data diagnose": ["data", "diagnose", "{data}", "--model", "toy:vlm", "--out", "{tmp}/d"],
    "data diagnose (diffusion)": ["data", "diagnose", "toy:pairs", "--model", "toy:sd"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_device_cuda_without_cuda_exits_2_naming_the_option(
    command, tmp_path, monkeypatch, no_cuda, capsys
):
    import mmalign.diffusion.load
    import mmalign.eval.implicit
    import mmalign.vlm.load

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.diffusion.load, "load_pipeline", recorder(calls))
    monkeypatch.setattr(mmalign.eval.implicit, "score_pairs", recorder(calls))
    monkeypatch.setattr(mmalign.vlm.load, "load_vlm", recorder(calls))
    if COMMANDS[command] is None:
        argv = _invert_args(tmp_path)
    else:
        data = _vlm_data(tmp_path) if "{data}" in COMMANDS[command] else ""
        argv = [a.replace("{tmp}", str(tmp_path)).replace("{data}", data)
                for a in COMMANDS[command]]  # fmt: skip
        argv += [] if "--out" in argv else ["--out", str(tmp_path / "d")]
    assert main([*argv, "--device", "cuda"]) == 2
    assert "--device cuda: torch sees no CUDA GPU" in capsys.readouterr().err
    assert calls == []  # refused before any model loads
