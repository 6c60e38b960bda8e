"""BPO's blind responses (`VLMRecipe._blind`) are cached by the weights (their dtype first), the
rows and the generation length, and generated on the accelerator's device. Greedy answers can
differ on a GPU, so the key names the device type and dtype they were generated in: answers
cached by a CPU run are not reused by a GPU run. A CPU float32 key is the key from before the
device was named (`devices.CPU_FLOAT32`, the only way they were generated before it moved to
the accelerator), so a CPU run still finds the answers it cached.

No GPU here: the accelerator's device is `meta`, standing for the GPU; generation is a stub
that records the device it ran on and stops the build on any device but the CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from device_helpers import Stop
from test_vlm_train import vlm_config

from mmalign.vlm import blind
from mmalign.vlm.recipe import VLMRecipe, _digest

BPO = [{"pair": "main", "loss": "dpo"}, {"pair": "blind", "loss": "dpo"}]


class _Accel:
    is_main_process = True

    def __init__(self, device: str):
        self.device = torch.device(device)


@pytest.fixture
def generated(tmp_path, monkeypatch) -> list[torch.device]:
    """The devices blind responses were generated on (a fresh cache per test)."""
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    seen: list[torch.device] = []

    def stub(model: Any, processor: Any, prompts: list[str], **kwargs: Any) -> blind.BlindAnswers:
        device = next(model.parameters()).device
        seen.append(device)
        if device.type != "cpu":
            raise Stop
        return blind.BlindAnswers(
            [f"blind {i}" for i in range(len(prompts))], [False] * len(prompts)
        )

    monkeypatch.setattr(blind, "blind_responses", stub)
    return seen


def _recipe(tmp_path: Path, device: str, **vlm: Any) -> VLMRecipe:
    cfg = vlm_config(tmp_path / "run", objective=BPO, data={"toy": {"n": 4}}, lora=None,
                     vlm={"blind_max_new_tokens": 3, **vlm})  # fmt: skip
    return VLMRecipe(cfg, _Accel(device))


def test_answers_cached_on_the_cpu_are_not_reused_on_the_accelerator(tmp_path, generated):
    _recipe(tmp_path, "cpu")
    _recipe(tmp_path, "cpu")  # read back: generated once
    assert generated == [torch.device("cpu")]
    with pytest.raises(Stop):  # generated again where the run's model is
        _recipe(tmp_path, "meta")
    assert [d.type for d in generated] == ["cpu", "meta"]
    entries = sorted((tmp_path / "cache" / "vlm-blind").glob("*.json"))
    assert len(entries) == 1  # the accelerator's answers were never written: the build stopped


def test_a_cpu_float32_run_keeps_the_key_from_before_the_device_was_named(tmp_path, generated):
    # the key from before the device was named, with "capped" since entries record which
    # answers hit blind_max_new_tokens (tests/test_review6_vlm_blind_cap.py)
    recipe = _recipe(tmp_path, "cpu")
    key = _digest(recipe.vlm.weights_key, recipe.rows._fingerprint, 3, "bos1", "missing", "capped")
    entry = tmp_path / "cache" / "vlm-blind" / f"{key}.json"
    assert entry.is_file()
    cached = blind.BlindAnswers([f"cached {i}" for i in range(4)], [False] * 4)
    entry.write_text(cached.to_json())  # as an earlier CPU run left it
    again = _recipe(tmp_path, "cpu")
    assert again.dataset.extra["blind"] == [f"cached {i}" for i in range(4)]
    assert len(generated) == 1


def test_the_key_names_the_device_and_dtype_but_cpu_float32():
    cpu = torch.nn.Linear(2, 2)
    assert blind.cache_precision(cpu, torch.device("cpu")) == []
    assert blind.cache_precision(cpu, torch.device("cuda", 1)) == [
        {"device": "cuda", "dtype": "float32"}
    ]
    half = torch.nn.Linear(2, 2).to(torch.bfloat16)
    assert blind.cache_precision(half, "cpu") == [{"device": "cpu", "dtype": "bfloat16"}]
