"""Inference commands run their models on `--device` (default `auto`: CUDA where torch sees it)
in `--dtype` (default float32): each command hands the resolved device and dtype to its loader.
The loaders are replaced by recorders that stop the command, so nothing loads or moves."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from device_helpers import Stop, recorder

from mmalign.cli import main


def _device(call: dict[str, Any]) -> str:
    return str(call["device"])


# ------------------------------------------------------------------------ the shared policy


def test_auto_resolves_to_cpu_here_and_to_cuda_where_torch_sees_a_gpu(monkeypatch):
    from mmalign.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit CPU stays the CPU


def test_a_device_the_machine_lacks_is_an_input_error(monkeypatch):
    from mmalign.config import InputError
    from mmalign.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match=r"--device cuda: torch sees no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(InputError, match="--device tpu"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(InputError, match=r"--device cuda:2: this machine has 2 CUDA GPU"):
        resolve_device("cuda:2")


CUDA_COMMANDS = {
    "sample": ["sample", "toy:sd", "--prompt", "a red circle"],
    "eval winrate": ["eval", "winrate", "--base", "toy:sd", "--tuned", "{tmp}", "--out", "{tmp}/o"],
    "eval vlm": ["eval", "vlm", "toy:vlm", "--task", "safety"],
    "chat": ["chat", "toy:vlm", "--prompt", "hello"],
    "data realign": ["data", "realign", "--model", "toy:vlm", "--data", "toy:vqa", "--out", "x"],
    "data user-embed": ["data", "user-embed", "{tmp}"],
    "label": ["label", "--model", "toy-sd", "--users", "{tmp}/none.txt"],
}


@pytest.mark.parametrize("command", sorted(CUDA_COMMANDS))
def test_device_cuda_without_cuda_exits_2_naming_the_option(command, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    calls: list[dict[str, Any]] = []
    import mmalign.diffusion
    import mmalign.vlm.load

    monkeypatch.setattr(mmalign.diffusion, "load_pipeline", recorder(calls))
    monkeypatch.setattr(mmalign.diffusion, "load_tuned", recorder(calls))
    monkeypatch.setattr(mmalign.vlm.load, "load_vlm", recorder(calls))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in CUDA_COMMANDS[command]]
    assert main([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: torch sees no CUDA GPU" in err
    assert calls == []  # refused before any model loads


# ------------------------------------------------------------------ diffusion commands


def test_sample_hands_its_loader_the_device_and_dtype(monkeypatch, pretend_cuda):
    import mmalign.diffusion

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.diffusion, "load_pipeline", recorder(calls))
    with pytest.raises(Stop):
        main(["sample", "toy:sd", "--prompt", "a red circle", "--dtype", "bfloat16"])
    assert _device(calls[0]) == "cuda" and calls[0]["dtype"] == "bfloat16"
    calls.clear()
    with pytest.raises(Stop):
        main(["sample", "toy:sd", "--prompt", "a red circle", "--device", "cpu"])
    assert _device(calls[0]) == "cpu" and calls[0]["dtype"] == "float32"


def test_sample_of_a_training_run_loads_it_on_the_device(tmp_path, monkeypatch, pretend_cuda):
    import json

    import mmalign.diffusion

    (tmp_path / "mmalign_run.json").write_text(json.dumps({"base": "toy:sd", "final": {}}))
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.diffusion, "load_tuned", recorder(calls))
    with pytest.raises(Stop):
        main(["sample", str(tmp_path), "--prompt", "x", "--dtype", "float16"])
    assert _device(calls[0]) == "cuda" and calls[0]["dtype"] == "float16"


def test_load_tuned_moves_the_whole_pipeline_to_the_device():
    from mmalign.diffusion import load_tuned
    from mmalign.toy.paths import model_path

    model = load_tuned(model_path("sd"), dtype="bfloat16", device="cpu")
    for part in (model.pipe.unet, model.pipe.text_encoder):
        p = next(part.parameters())
        assert p.dtype == torch.bfloat16 and p.device.type == "cpu"


def test_eval_winrate_loads_base_and_tuned_alike(tmp_path, monkeypatch, pretend_cuda):
    import mmalign.diffusion

    base_calls: list[dict[str, Any]] = []
    tuned_calls: list[dict[str, Any]] = []
    fake = SimpleNamespace(pipe=SimpleNamespace(), source="toy:sd")
    monkeypatch.setattr(
        mmalign.diffusion, "load_pipeline", recorder(base_calls, stop=False, result=fake)
    )
    monkeypatch.setattr(mmalign.diffusion, "load_tuned", recorder(tuned_calls))
    argv = ["eval", "winrate", "--base", "toy:sd", "--tuned", str(tmp_path), "--out",
            str(tmp_path / "o"), "--dtype", "bfloat16"]  # fmt: skip
    with pytest.raises(Stop):
        main(argv)
    for calls in (base_calls, tuned_calls):
        assert _device(calls[0]) == "cuda" and calls[0]["dtype"] == "bfloat16"


def test_sample_ppd_and_winrate_users_load_on_the_device(tmp_path, monkeypatch, pretend_cuda):
    import mmalign.diffusion.ppd_users as ppd_users
    from mmalign.diffusion import ppd

    (tmp_path / ppd.ADAPTER_FILE).write_bytes(b"")
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ppd_users, "load_ppd", recorder(calls))
    with pytest.raises(Stop):
        main(["sample", "toy:sd", "--prompt", "x", "--ppd", str(tmp_path), "--user", "h01",
              "--dtype", "bfloat16"])  # fmt: skip
    assert _device(calls[0]) == "cuda" and calls[0]["dtype"] == "bfloat16"

    calls.clear()
    embed_calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ppd_users, "user_embeddings", recorder(embed_calls, stop=False, result={}))
    with pytest.raises(Stop):
        main(["eval", "winrate", "--tuned", str(tmp_path), "--user", "h01", "--out",
              str(tmp_path / "o"), "--device", "cpu", "--dtype", "float16"])  # fmt: skip
    assert _device(embed_calls[0]) == "cpu"  # a new user's encoder runs there too
    assert _device(calls[0]) == "cpu" and calls[0]["dtype"] == "float16"


# ------------------------------------------------------------------------ VLM commands


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "vlm", "toy:vlm", "--task", "safety"],
        ["chat", "toy:vlm", "--prompt", "hello"],
        ["data", "realign", "--model", "toy:vlm", "--data", "toy:vqa", "--out", "x"],
    ],
    ids=["eval vlm", "chat", "data realign"],
)
def test_vlm_commands_hand_load_vlm_the_device_and_dtype(argv, monkeypatch, pretend_cuda):
    import mmalign.vlm.load

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.vlm.load, "load_vlm", recorder(calls))
    with pytest.raises(Stop):
        main([*argv, "--dtype", "bfloat16"])
    assert _device(calls[0]) == "cuda" and calls[0]["dtype"] == "bfloat16"


def test_data_user_embed_hands_load_vlm_the_device_and_dtype(tmp_path, monkeypatch):
    import mmalign.data.schema
    import mmalign.vlm.load
    import mmalign.vlm.user_embed

    (tmp_path / "pairs").mkdir()
    monkeypatch.setattr(mmalign.data.schema, "load_pairs", lambda path: [])
    monkeypatch.setattr(mmalign.vlm.user_embed, "examples_from_pairs", lambda rows: ({}, 0))
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.vlm.load, "load_vlm", recorder(calls))
    with pytest.raises(Stop):
        main(["data", "user-embed", str(tmp_path), "--device", "cpu", "--dtype", "bfloat16"])
    assert _device(calls[0]) == "cpu" and calls[0]["dtype"] == "bfloat16"


def test_load_vlm_puts_the_model_on_the_device_in_the_dtype():
    from mmalign.vlm.load import load_vlm

    vlm = load_vlm("toy:vlm", dtype="bfloat16", device="cpu")
    p = next(vlm.model.parameters())
    assert p.dtype == torch.bfloat16 and p.device.type == "cpu"


# --------------------------------------------------------------------- the labeling app


def test_label_generators_load_on_the_device(tmp_path, monkeypatch, pretend_cuda):
    from mmalign_label.generate import PairGenerator
    from mmalign_label.vlm_generate import ResponseSampler

    import mmalign.diffusion
    import mmalign.vlm.load

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.diffusion, "load_pipeline", recorder(calls))
    gen = PairGenerator(None, tmp_path, "toy-sd", device="cuda", dtype="float16")  # type: ignore[arg-type]
    with pytest.raises(Stop):
        gen.generate("a red circle")
    assert _device(calls[0]) == "cuda" and calls[0]["dtype"] == "float16"

    calls.clear()
    monkeypatch.setattr(mmalign.vlm.load, "load_vlm", recorder(calls))
    with pytest.raises(Stop):
        ResponseSampler("toy-vlm", device="cuda", dtype="bfloat16")
    assert _device(calls[0]) == "cuda" and calls[0]["dtype"] == "bfloat16"


def test_label_serve_passes_its_device_to_the_app(tmp_path, monkeypatch, pretend_cuda):
    import mmalign_label.app
    from mmalign_label.users import add_user

    seen: dict[str, Any] = {}

    def fake_app(*args: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise Stop

    users = tmp_path / "users.txt"
    add_user(users, "ann", "a-long-password-123")
    monkeypatch.setattr(mmalign_label.app, "LabelApp", fake_app)
    with pytest.raises(Stop):
        main(["label", "--model", "toy-sd", "--users", str(users), "--db",
              str(tmp_path / "l.sqlite"), "--dtype", "bfloat16"])  # fmt: skip
    assert str(seen["device"]) == "cuda" and seen["dtype"] == "bfloat16"


# ------------------------------------------------------------------------------- PPD


def test_ppd_training_encoder_runs_on_the_accelerator_in_ppd_encoder_dtype(monkeypatch):
    import mmalign.vlm.load
    from mmalign.diffusion import ppd_recipe

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.vlm.load, "load_vlm", recorder(calls))
    monkeypatch.setattr("mmalign.vlm.user_embed.examples_from_pairs", lambda rows: ({"u": []}, 0))
    cfg = SimpleNamespace(
        ppd=SimpleNamespace(encoder="toy:vlm", shots=4, layer=-2, pooling="mean",
                            embeddings=None, batch_size=8, encoder_device="auto",
                            encoder_dtype="bfloat16"),
        model=SimpleNamespace(dtype="float16"),  # not the encoder's (ppd.encoder_dtype)
    )  # fmt: skip
    with pytest.raises(Stop):
        ppd_recipe.training_embeddings(cfg, [], device=torch.device("cpu"))
    assert _device(calls[0]) == "cpu" and calls[0]["dtype"] == "bfloat16"

    # the recipe hands it the accelerator's device
    seen: dict[str, Any] = {}

    def record(cfg: Any, rows: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(ppd_recipe, "training_embeddings", record)
    fake = SimpleNamespace(
        cfg=cfg, rows=_Rows(), accelerator=SimpleNamespace(device=torch.device("cpu"))
    )
    with pytest.raises(Stop):
        ppd_recipe.PPDRecipe._make_trainable(fake)  # type: ignore[arg-type]
    assert seen["device"] == torch.device("cpu")


class _Rows:
    column_names = ("user_id",)

    def __getitem__(self, key: str) -> list[str]:
        return ["u"]


def test_a_new_ppd_user_is_embedded_on_the_device_in_the_run_encoders_dtype(monkeypatch):
    import datasets

    import mmalign.toy.cache
    import mmalign.vlm.load
    from mmalign.diffusion import ppd_users
    from mmalign.vlm.user_embed import PROMPT_FORMAT_VERSION

    monkeypatch.setattr(mmalign.toy.cache, "toy_pairs", lambda *a, **k: "unused")
    monkeypatch.setattr(datasets, "load_from_disk", lambda path: [])
    monkeypatch.setattr("mmalign.vlm.user_embed.examples_from_pairs", lambda rows: ({}, 0))
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.vlm.load, "load_vlm", recorder(calls))
    meta = {"encoder": "toy:vlm", "prompt_format": PROMPT_FORMAT_VERSION,
            "encoder_dtype": "bfloat16"}  # fmt: skip
    with pytest.raises(Stop):
        ppd_users._toy_embeddings(["h01"], meta, device=torch.device("cpu"))
    assert _device(calls[0]) == "cpu" and calls[0]["dtype"] == "bfloat16"
    calls.clear()
    with pytest.raises(Stop):  # a run from before the dtype was recorded: float32, as then
        ppd_users._toy_embeddings(["h01"], {**meta, "encoder_dtype": None})
    assert calls[0]["dtype"] == "float32"
