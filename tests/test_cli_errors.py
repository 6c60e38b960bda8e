"""Bad input to every `mmalign` command ends with exit status 2, a short message naming the
input, and no traceback; a bug keeps its traceback. Offline, with an empty hub cache."""

# ruff: noqa: E501  (the table below reads one case per line)

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmalign.cli import main

ROOT = Path(__file__).resolve().parents[1]
BAD_YAML = "model:\n  name_or_path: toy:sd\n data: [1\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    (root / "bad.yaml").write_text(BAD_YAML)
    (root / "badcard.yaml").write_text("name: x\n  kind: [\n")
    (root / "users.txt").write_text("")
    (root / "tuned").mkdir()
    (root / "not-an-image.png").write_text("text")
    return root


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.delenv("MMALIGN_DEBUG", raising=False)
    monkeypatch.delenv("MMALIGN_PICKAPIC", raising=False)


UNCACHED = "is not in the local cache (offline): download it with `hf download"

# (command, argv with {f} for the fixture folder, text the message must contain)
CASES = [
    ("config", "config show {f}/bad.yaml", "bad.yaml: line 3, column 2: YAML syntax error"),
    ("config", "config show {f}/none.yaml", "config file not found: {f}/none.yaml"),
    ("config", "config show configs/toy/mapo.yaml objective.0.beta=-1", "objective.0.beta"),
    ("train", "train {f}/bad.yaml", "bad.yaml: line 3, column 2"),
    ("train", "train {f}/none.yaml", "config file not found"),
    ("train", "train configs/sdxl/dpo_lora.yaml", f"model.vae: madebyollin/sdxl-vae-fp16-fix {UNCACHED}"),
    ("train", "train configs/toy/mapo.yaml objective.0.beta=-1", "objective.0.beta (mapo) must be > 0"),
    ("train", "train configs/toy/mapo.yaml objective.0.weight=-1", "objective.0.weight must be >= 0"),
    ("train", "train configs/toy/mapo.yaml data.path={f}/none", "data.path: {f}/none does not exist"),
    ("train", "train configs/toy/mapo.yaml model.name_or_path={f}/none", "model.name_or_path: {f}/none does not exist"),
    ("train", "train configs/toy/mapo.yaml nosuch.key=1", "unknown key 'nosuch'"),
    ("eval winrate", "eval winrate --tuned {f}/none --out {f}/o", "--tuned {f}/none does not exist"),
    ("eval winrate", "eval winrate --tuned {f}/tuned --scorers toy:fidelty --out {f}/o", "unknown scorer 'toy:fidelty'"),
    ("eval winrate", "eval winrate --tuned {f}/tuned --base toy:sd --prompts {f}/none.txt --out {f}/o", "{f}/none.txt"),
    ("eval winrate", "eval winrate --tuned {f}/tuned --base org/uncached --out {f}/o", f"--base: org/uncached {UNCACHED}"),
    ("eval winrate", "eval winrate --tuned {f}/tuned --steps 0 --out {f}/o", "--steps must be >= 1"),
    ("eval accuracy", "eval accuracy --scorer pickscore --data toy:pairs", f"yuvalkirstain/PickScore_v1 {UNCACHED}"),
    ("eval accuracy", "eval accuracy --scorer pickscor --data toy:pairs", "unknown scorer 'pickscor'"),
    ("eval accuracy", "eval accuracy --scorer toy:fidelity --data {f}/none", "--data '{f}/none'"),
    ("eval accuracy", "eval accuracy --scorer toy:fidelity --data toy:pairs --threshold -1", "--threshold must be >= 0"),
    ("eval accuracy", "eval accuracy --scorer hpsv2 --data toy:pairs", f"xswu/HPSv2 {UNCACHED}"),
    ("eval vlm", "eval vlm {f}/none --task hallucination", "model: {f}/none does not exist"),
    ("eval vlm", "eval vlm org/uncached --task hallucination", f"model: org/uncached {UNCACHED}"),
    ("eval vlm", "eval vlm toy:vlm --task hallucination --n 0", "--n must be >= 1"),
    ("sample", "sample {f}/none --prompt x", "model: {f}/none does not exist"),
    ("sample", "sample org/uncached --prompt x", f"model: org/uncached {UNCACHED}"),
    ("sample", "sample toy:sd --prompt x --lora {f}/none", "--lora: {f}/none does not exist"),
    ("sample", "sample toy:sd --prompt x --steps 0", "--steps must be >= 1"),
    ("sample", "sample toy:flow --prompt x --out {f}/grid", "--out {f}/grid: give the grid's image path"),
    ("chat", "chat {f}/none --prompt hi", "model: {f}/none does not exist"),
    ("chat", "chat Qwen/Qwen2-VL-2B-Instruct --prompt hi", f"Qwen/Qwen2-VL-2B-Instruct {UNCACHED}"),
    ("chat", "chat toy:vlm --prompt hi --image {f}/none.png", "--image {f}/none.png: no such file"),
    ("chat", "chat toy:vlm --prompt hi --image {f}/not-an-image.png", "not an image"),
    ("data", "data show {f}/none.yaml", "{f}/none.yaml"),
    ("data", "data show {f}/badcard.yaml", "badcard.yaml"),
    ("data", "data show pickapic_v2", f"yuvalkirstain/pickapic_v2 {UNCACHED}"),
    ("data", "data realign --model org/uncached --data toy:vqa --out {f}/o", f"org/uncached {UNCACHED}"),
    ("label", "label --users {f}/none/users.txt", "users file {f}/none/users.txt not found: create it with `mmalign label adduser NAME --users"),
    ("label", "label --users {f}/users.txt --limit 0", "--limit must be >= 1, got 0"),
    ("label", "label --users {f}/users.txt", "users.txt has no users"),
    ("label", "label export --db {f}/none/l.sqlite --out {f}/o --format pairs", "no such database file"),
    ("toy", "toy data pairs --out {f}/o --set bad", "--set 'bad' is not of the form key=value"),
    ("toy", "toy data pairs --out {f}/o --set nosuch=1", "no option 'nosuch'"),
    ("toy", "toy data pairs --out {f}/o --n -1", "--n must be >= 1"),
    ("toy", "toy data pairs --out {f}/o --model {f}/none", "--model {f}/none does not exist"),
]  # fmt: skip


@pytest.mark.parametrize(("command", "line", "expected"), CASES, ids=[c[1] for c in CASES])
def test_bad_input_exits_2_naming_it(files, capsys, command, line, expected):
    argv = line.format(f=files).split()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    message = err[err.index("mmalign: ") :]  # after any progress bar of a model that loaded
    assert expected.format(f=files) in message
    assert len(message.strip().splitlines()) <= 3, message  # one line per input named


def test_every_command_has_three_bad_inputs():
    counts: dict[str, int] = {}
    for command, _, _ in CASES:
        counts[command] = counts.get(command, 0) + 1
    commands = {"train", "eval winrate", "eval accuracy", "eval vlm", "sample", "chat", "data"}
    commands |= {"label", "toy", "config"}
    assert {c: n for c, n in counts.items() if n < 3} == {}
    assert commands <= set(counts)


def test_lora_targets_are_checked_before_the_data_is_built(files, capsys):
    argv = ["train", "configs/toy/mapo.yaml", "lora.target_modules=[to_x]", f"output_dir={files}/r"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "lora.target_modules: 'to_x' names no layer of the UNet" in err
    assert "building toy dataset" not in err and "pre-encoding" not in err
    argv[2] = "lora.target_modules=[attn1]"  # an Attention block, not a layer LoRA wraps
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'attn1' names Attention layers of the UNet, which LoRA cannot wrap" in err


def test_debug_shows_the_traceback(files, monkeypatch):
    from mmalign.config import ConfigError

    with pytest.raises(ConfigError, match="config file not found"):
        main(["train", f"{files}/none.yaml", "--debug"])
    monkeypatch.setenv("MMALIGN_DEBUG", "1")
    with pytest.raises(ConfigError):
        main(["train", f"{files}/none.yaml"])


def test_a_bug_keeps_its_traceback(monkeypatch):
    # A ValueError raised inside a library is a bug in how mmalign called it, not bad input.
    import mmalign.cli as cli

    monkeypatch.setattr(cli, "_cmd_losses", lambda args: json.loads("{"))
    with pytest.raises(json.JSONDecodeError):
        main(["losses"])


def _run(*argv: str, tmp: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf"), "OMP_NUM_THREADS": "1"}
    env["HF_HUB_CACHE"] = str(tmp / "hf" / "hub")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mmalign.cli", *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return proc, time.perf_counter() - start


def test_in_a_terminal_the_sdxl_recipe_offline_names_every_missing_id(tmp_path):
    proc, seconds = _run("train", "configs/sdxl/dpo_lora.yaml", tmp=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, proc.stderr
    for key, repo in [
        ("model.name_or_path", "stabilityai/stable-diffusion-xl-base-1.0"),
        ("model.vae", "madebyollin/sdxl-vae-fp16-fix"),
        ("data.path", "yuvalkirstain/pickapic_v2"),
    ]:
        assert any(f"{key}: {repo} {UNCACHED}" in line for line in lines), key
    assert seconds < 30  # nothing heavy loads (measured about 2 s)


@pytest.mark.parametrize(
    "argv",
    [
        ("train", "{f}/bad.yaml"),
        ("label", "export", "--db", "{f}/none/l.sqlite", "--out", "{f}/o", "--format", "pairs"),
        ("eval", "accuracy", "--scorer", "pickscore", "--data", "toy:pairs"),
    ],
)
def test_in_a_terminal_no_traceback(files, tmp_path, argv):
    proc, _ = _run(*(a.format(f=files) for a in argv), tmp=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("mmalign: ")


def test_toy_build_names_models_positionally_and_catches_typos(capsys):
    from mmalign.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["toy", "build", "flow"]).models == ["flow"]
    assert parser.parse_args(["toy", "build"]).models == []  # all three
    assert main(["toy", "build", "flw"]) == 2
    assert "no toy model 'flw'; did you mean 'flow'?" in capsys.readouterr().err
