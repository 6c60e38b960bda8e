"""Review 9: `load_tuned`'s messages name the options the user typed. The base it loads was
named `model` ("model: org/x is not in the local cache ..., or set model to a local folder")
where the command's option is `--base`; the tuned model was always `--tuned`, and the LoRA in it
`lora`, whatever the command called them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from test_cli_errors import offline  # noqa: F401  (autouse: offline, an empty hub cache)

import mmalign.diffusion.tuned as tuned_module
from mmalign.cli import main
from mmalign.config import InputError
from mmalign.diffusion import apply_lora, load_tuned
from mmalign.diffusion.lora import LORA_FILE

MISSING = "org/no-such-base"


@pytest.fixture
def lora(tmp_path):
    folder = tmp_path / "lora"
    folder.mkdir()
    (folder / LORA_FILE).write_bytes(b"")  # never read: each test fails before
    return folder


def test_the_base_is_named_by_its_option(lora):
    with pytest.raises(InputError) as err:
        load_tuned(lora, MISSING)
    message = str(err.value)
    assert message.startswith(f"--base: {MISSING} is not in the local cache"), message
    assert message.endswith("or set --base to a local folder")
    with pytest.raises(InputError, match=f"^--reference: {MISSING} is not in the local cache"):
        load_tuned(lora, MISSING, base_key="--reference")
    with pytest.raises(ValueError, match=r"give the base model \(--reference\)"):
        load_tuned(lora, base_key="--reference")


def test_the_tuned_model_is_named_by_its_option(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"^--model {tmp_path / 'none'} does not exist"):
        load_tuned(tmp_path / "none", MISSING, key="--model")


def test_a_lora_that_does_not_fit_is_named_by_its_option(lora, monkeypatch):
    """The LoRA of a tuned folder is the folder the user named: `key`, not `lora`."""

    def refuse(path):
        raise ValueError("Target modules {'nothing'} not found in the base model.")

    pipe = SimpleNamespace(load_lora_weights=refuse)
    model = SimpleNamespace(unet=torch.nn.Linear(2, 2), source="base", pipe=pipe)
    with pytest.raises(ValueError, match=f"^--lora: the LoRA at {lora} does not fit the model"):
        apply_lora(model, lora, key="--lora")  # type: ignore[arg-type]
    monkeypatch.setattr(tuned_module, "load_pipeline", lambda *a, **kw: model)
    with pytest.raises(ValueError, match=f"^--tuned: the LoRA at {lora} does not fit the model"):
        load_tuned(lora, "base")


def test_eval_accuracy_names_base(lora, capsys):
    argv = ["eval", "accuracy", "--data", "toy:pairs", "--model", str(lora), "--base", MISSING]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--base: {MISSING} is not in the local cache" in err
    assert "set --base to a local folder" in err and "model:" not in err
