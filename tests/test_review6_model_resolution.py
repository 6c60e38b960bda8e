"""Model resolution and its errors (review 6 walkthrough).

1. A diffusion training run given to `chat` / `eval vlm` ended in a traceback (its LoRA file was
   handed to transformers as a hub id); now exit 2 naming the run's kind and what takes it.
2. A model of the wrong family (toy:vlm to `sample`, toy:sd to `chat` or a VLM recipe, a local
   folder whose files say what it is) was reported as "does not exist".
3. A local folder given as `--lora` / `--adapter` was sent to the hub (a LoRA-less folder, a
   diffusion run as a VLM adapter: five retries, then PEFT's "Can't find adapter_config.json").
4. `data/realign` in shipped recipes was reported as a hub id only.
5. Online with a dead hub, `train` retried each id for a minute and then named one, for the
   wrong reason (diffusers' "does not appear to have a file named config.json").
6. `train --device cuda` suggested a scorer's `diffusion.dense.device`.

A dead hub is simulated without waiting on retries: the reachability probe (`hub._probe`) says
no, and every downloader raises if it is reached at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from huggingface_hub import errors as hub_errors_module

from mmalign import hub
from mmalign.cli import main
from mmalign.config import load_config
from mmalign.model_kind import model_kind, run_weights

ROOT = Path(__file__).resolve().parents[1]
LORA = "pytorch_lora_weights.safetensors"


def _run(folder: Path, task: str, final: dict) -> Path:
    """A training output_dir as the loop writes it (the recorded path relative to another cwd)."""
    folder.mkdir(parents=True, exist_ok=True)
    run = {"config": {"model": {"kind": task}}, "task": task, "final": final}
    (folder / "mmalign_run.json").write_text(json.dumps(run))
    return folder


@pytest.fixture
def diffusion_run(tmp_path) -> Path:
    folder = _run(tmp_path / "runs" / "toy-dpo", "diffusion",
                  {"kind": "lora", "path": f"runs/toy-dpo/{LORA}"})  # fmt: skip
    (folder / LORA).write_bytes(b"")
    return folder


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """Online mode, an empty cache, a hub that cannot be reached; any download fails the test."""
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "0")
    monkeypatch.setattr(hub, "_REACHABLE", {}, raising=False)
    monkeypatch.setattr(hub, "_probe", lambda endpoint, timeout: False, raising=False)

    def reached(*args, **kwargs):
        raise AssertionError("a loader contacted the hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", reached)
    monkeypatch.setattr(huggingface_hub.file_download, "hf_hub_download", reached)


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err[err.index("mmalign: ") :]


# ---------------------------------------------------------------- 1. a diffusion run to chat


@pytest.mark.parametrize("command", [["chat"], ["eval", "vlm"]])
def test_a_diffusion_run_is_refused_by_the_vlm_commands(capsys, diffusion_run, command):
    extra = ["--prompt", "hi"] if command == ["chat"] else ["--task", "hallucination", "--n", "2"]
    message = _error(capsys, [*command, str(diffusion_run), *extra])
    assert f"model: {diffusion_run} is a diffusion training run (model.kind: diffusion)" in message
    assert "`mmalign sample` / `mmalign eval winrate` take it" in message
    assert f"`mmalign {' '.join(command)}` needs a VLM" in message


def test_a_vlm_run_resolves_to_its_adapter_in_its_own_folder(tmp_path, monkeypatch):
    """The recorded final path is relative to where training ran: from elsewhere it missed."""
    from mmalign.vlm.load import _sources

    run = _run(tmp_path / "somewhere" / "run", "vlm",
               {"kind": "peft_adapter", "path": "runs/run/adapter"})  # fmt: skip
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text('{"base_model_name_or_path": "toy:vlm"}')
    monkeypatch.chdir(tmp_path)
    assert run_weights(run) == run / "adapter"
    source, adapters = _sources(str(run), None)
    assert adapters == (str(run / "adapter"),)
    assert model_kind(source) is not None and model_kind(source).kind == "vlm"


# ------------------------------------------------------------------ 2. the wrong model family


def test_toy_and_local_kinds_are_read_from_their_files():
    from mmalign.toy.paths import model_path

    assert model_kind("toy:sd").kind == model_kind("toy:flow").kind == "diffusion"
    assert model_kind("toy:vlm").kind == "vlm" and model_kind("toy:dense").kind == "reward"
    assert model_kind(model_path("sd")).kind == "diffusion"  # model_index.json
    assert model_kind(model_path("vlm")).kind == "vlm"  # config.json: model_type llava


def test_the_file_names_model_kind_reads_are_the_writers_own():
    from mmalign import model_kind as mk
    from mmalign.diffusion.lora import LORA_FILE
    from mmalign.rewards.dense.model import MARKER
    from mmalign.train.loop import RUN_FILE

    assert (mk.LORA_FILE, mk.RUN_FILE, mk.REWARD_MARKER) == (LORA_FILE, RUN_FILE, MARKER)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sample", "toy:vlm", "--prompt", "x"],
         "model: toy:vlm is a VLM: `mmalign chat` / `mmalign eval vlm` take it; "
         "`mmalign sample` needs a diffusion model"),
        (["chat", "toy:sd", "--prompt", "x"],
         "model: toy:sd is a diffusion model: `mmalign sample` / `mmalign eval winrate` take "
         "it; `mmalign chat` needs a VLM"),
        (["chat", "{sd}", "--prompt", "x"], "model: {sd} is a diffusion model"),
        (["sample", "{vlm}", "--prompt", "x"], "model: {vlm} is a VLM"),
        (["train", "configs/toy/vlm_dpo.yaml", "model.name_or_path=toy:sd", "output_dir={out}"],
         "model.name_or_path: toy:sd is a diffusion model: `mmalign sample` / `mmalign eval "
         "winrate` take it; a model.kind: vlm recipe needs a VLM"),
        (["train", "configs/toy/dpo.yaml", "model.kind=vlm", "output_dir={out}"],
         "model.name_or_path: toy:sd is a diffusion model"),
        (["train", "configs/toy/vlm_dpo.yaml", "model.name_or_path={sd}", "output_dir={out}"],
         "model.name_or_path: {sd} is a diffusion model"),
    ],
)  # fmt: skip
def test_a_model_of_the_wrong_kind_is_named_as_such(capsys, tmp_path, argv, expected):
    from mmalign.toy.paths import model_path

    names = {"sd": model_path("sd"), "vlm": model_path("vlm"), "out": tmp_path / "out"}
    message = _error(capsys, [a.format(**names) for a in argv])
    assert expected.format(**names) in message
    assert "does not exist" not in message


# ------------------------------------------------------- 3. local folders never go to the hub


def test_a_diffusion_run_as_adapter_is_named_without_the_hub(capsys, no_hub, diffusion_run):
    message = _error(capsys, ["chat", "toy:vlm", "--adapter", str(diffusion_run), "--prompt", "x"])
    assert message.startswith(f"mmalign: error: --adapter: {diffusion_run} is a diffusion training")
    assert "--adapter needs a VLM's PEFT adapter" in message


def test_a_folder_without_an_adapter_or_lora_names_the_option_and_the_file(
    capsys, no_hub, tmp_path
):
    empty = tmp_path / "empty"
    empty.mkdir()
    message = _error(capsys, ["chat", "toy:vlm", "--adapter", str(empty), "--prompt", "x"])
    assert f"--adapter: {empty} holds no adapter_config.json" in message
    message = _error(capsys, ["sample", "toy:sd", "--lora", str(empty), "--prompt", "x"])
    assert f"--lora: {empty} holds no {LORA}" in message


def test_a_missing_relative_lora_names_the_option_and_both_readings(
    capsys, no_hub, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    message = _error(capsys, ["sample", "toy:sd", "--lora", "runs/nope", "--prompt", "x"])
    assert message.startswith("mmalign: error: --lora: runs/nope: no local folder of that name")
    assert "could not be downloaded (no connection to the hub)" in message
    message = _error(capsys, ["sample", "toy:sd", "--lora", "./nope", "--prompt", "x"])
    assert "--lora: ./nope does not exist (no such local folder or file)" in message


def test_looks_local():
    assert hub.looks_local("./data/realign") and hub.looks_local("../x/y")
    assert hub.looks_local("~/x") and hub.looks_local("/abs/path")
    assert not hub.looks_local("data/realign") and not hub.looks_local("org/model")
    assert not hub.looks_local("toy:sd")


# ------------------------------------------------------------------ 4. local paths in recipes


def test_an_ambiguous_relative_name_offline_says_both(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no data/ folder here
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = hub.problem(hub.Need("data/realign", "data.path", repo_type="dataset"))
    assert message is not None
    assert message.startswith("data.path: data/realign: no local folder of that name")
    assert "not a hub dataset in the local cache (offline)" in message
    assert "`hf download data/realign --repo-type dataset`" in message


@pytest.mark.parametrize(
    ("recipe", "folder"),
    [("configs/vlm/llava15_rdpo_lora.yaml", "./data/realign"),
     ("configs/reward/richhf.yaml", "./data/richhf-18k")],
)  # fmt: skip
def test_shipped_recipes_name_their_local_data_as_paths(monkeypatch, tmp_path, recipe, folder):
    from mmalign.train import Config

    cfg = load_config(Config, ROOT / recipe, [])
    assert cfg.data.path == folder
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = hub.problem(hub.Need(cfg.data.path, "data.path", repo_type="dataset"))
    assert message == f"data.path: {folder} does not exist (no such local folder or file)"
    text = (ROOT / recipe).read_text()
    assert "VLM issue" not in text
    if "realign" in recipe:
        assert "`mmalign data realign" in text


# ------------------------------------------------------------------- 5. a dead hub, online


def test_train_with_a_dead_hub_names_every_id_at_once(capsys, no_hub, tmp_path, monkeypatch):
    import diffusers

    def reached(*args, **kwargs):
        raise AssertionError("a loader ran")

    for cls in (diffusers.DiffusionPipeline, diffusers.AutoencoderKL):
        monkeypatch.setattr(cls, "from_pretrained", reached)
    message = _error(capsys, ["train", str(ROOT / "configs/sdxl/dpo_lora.yaml"),
                              f"output_dir={tmp_path / 'out'}"])  # fmt: skip
    lines = message.strip().splitlines()
    assert len(lines) == 3, message
    keys = (
        "model.name_or_path: stabilityai/stable-diffusion-xl-base-1.0 ",
        "model.vae: madebyollin/sdxl-vae-fp16-fix ",
        "data.path: yuvalkirstain/pickapic_v2 ",
    )
    for key, line in zip(keys, lines, strict=True):
        assert key in line and "could not be downloaded (no connection to the hub)" in line


def test_a_connection_failure_worded_by_diffusers_is_read_as_one(monkeypatch):
    """diffusers re-raises the hub's LocalEntryNotFoundError (caused by a ConnectError) as
    "does not appear to have a file named config.json": the cause is what happened."""
    try:
        try:
            try:
                raise httpx.ConnectError("[Errno -2] Name or service not known")
            except httpx.ConnectError as err:
                raise hub_errors_module.LocalEntryNotFoundError("cannot find") from err
        except hub_errors_module.LocalEntryNotFoundError as err:
            raise OSError("org/vae does not appear to have a file named config.json.") from err
    except OSError as err:
        wrapped = err
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    message = hub.hub_error_message(wrapped, "org/vae", "model.vae")
    assert message is not None and "no connection to the hub" in message, message


def test_the_probe_tells_no_connection_from_an_answer(monkeypatch):
    import huggingface_hub.utils

    class Session:
        def __init__(self, error: Exception | None):
            self.error = error

        def head(self, url, timeout):
            if self.error is not None:
                raise self.error
            return httpx.Response(401)

    for error, reachable in [
        (httpx.ConnectError("[Errno -2] Name or service not known"), False),
        (httpx.ConnectTimeout("timed out"), False),
        (None, True),
        (RuntimeError("something else"), True),
    ]:
        monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda e=error: Session(e))
        assert hub._probe("https://huggingface.co", 1.0) is reachable


# ------------------------------------------------------------------ 6. train --device


def test_train_device_points_to_accelerate(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "configs/toy/dpo.yaml", "--device", "cuda"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --device cuda" in err
    assert "accelerate" in err and "ACCELERATE_USE_CPU=1" in err
    assert "diffusion.dense.device" not in err
