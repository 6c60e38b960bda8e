"""`run_winrate` reuses a flow model's saved images only when they were drawn with the same T5
setting: whether the pipeline has its T5 encoder, and the T5 length it samples with. The base
of `mmalign eval winrate` samples with its run's T5 setting, which neither its id nor its
weights show, so two evaluations of runs that differ only there must not share base images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flow_helpers import MAX_SEQUENCE
from PIL import Image

from mmalign.diffusion.flow_tiny import tiny_flux_pipeline, tiny_sd3_pipeline
from mmalign.diffusion.load import tiny_sd_pipeline
from mmalign.eval.winrate import run_winrate, text_encoding

PROMPTS = ["a red circle on a blue background", "a green square on a white background"]
KW: dict[str, Any] = {"steps": 2, "guidance": 2.0, "batch_size": 2, "report": False,
                      "meta": {"base": "tiny-sd3", "tuned": "run"}}  # fmt: skip


def _sd3(*, t5: bool = True, length: int | None = MAX_SEQUENCE) -> Any:
    """A tiny SD3 pipeline set up as `mmalign eval winrate` sets up a run's base: T5 dropped
    or kept, and the run's T5 length."""
    pipe = tiny_sd3_pipeline(seed=0, t5=t5)
    pipe.set_progress_bar_config(disable=True)
    if length is not None:
        pipe.mmalign_max_sequence_length = length
    return pipe


def _pixels(out: Path, model: str) -> list[np.ndarray]:
    files = sorted((out / "images" / model).glob("*.png"))
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def test_text_encoding_names_what_a_flow_pipeline_samples_with():
    assert text_encoding(_sd3()) == {"t5": True, "max_sequence_length": MAX_SEQUENCE}
    assert text_encoding(_sd3(length=None)) == {"t5": True, "max_sequence_length": 256}
    no_t5 = _sd3(t5=False, length=None)  # as many zeros as its CLIP tokenizer has tokens
    assert text_encoding(no_t5) == {"t5": False,
                                    "max_sequence_length": no_t5.tokenizer_max_length}  # fmt: skip
    assert text_encoding(tiny_flux_pipeline(seed=0)) == {"t5": True, "max_sequence_length": 512}
    assert text_encoding(tiny_sd_pipeline(seed=0)) is None  # SD1.5 / SDXL: no T5 to record


@pytest.mark.parametrize(
    "changed", [{"t5": False}, {"length": 2 * MAX_SEQUENCE}], ids=["drop-t5", "t5-length"]
)
def test_a_base_drawn_with_another_t5_setting_is_drawn_again(tmp_path, capsys, changed):
    """Same base id and weights, same tuned model and sampler: only the base's T5 setting
    differs, so its images are drawn again (and equal a fresh evaluation's) while the tuned
    model's are reused."""
    tuned = _sd3()
    first = run_winrate(_sd3(), tuned, PROMPTS, ["toy:fidelity"], tmp_path / "eval", **KW)
    assert first["images_generated"] == 4
    before = _pixels(tmp_path / "eval", "base")
    again = run_winrate(_sd3(**changed), tuned, PROMPTS, ["toy:fidelity"], tmp_path / "eval", **KW)
    assert "images/base was generated with other settings" in capsys.readouterr().out
    assert (again["images_generated"], again["images_reused"]) == (2, 2)
    run_winrate(_sd3(**changed), tuned, PROMPTS, ["toy:fidelity"], tmp_path / "fresh", **KW)
    after, fresh = _pixels(tmp_path / "eval", "base"), _pixels(tmp_path / "fresh", "base")
    assert len(after) == len(fresh) == 2
    assert all(np.array_equal(a, f) for a, f in zip(after, fresh, strict=True))
    assert any(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))
    settings = json.loads((tmp_path / "eval" / "images" / "settings.json").read_text())
    assert settings["base_text_encoding"] == text_encoding(_sd3(**changed))
    assert settings["tuned_text_encoding"] == text_encoding(tuned)
    # the same setting again: everything reused
    same = run_winrate(_sd3(**changed), tuned, PROMPTS, ["toy:fidelity"], tmp_path / "eval", **KW)
    assert (same["images_generated"], same["images_reused"]) == (0, 4)


def test_flow_images_recorded_without_a_t5_setting_are_drawn_again(tmp_path):
    """A record written before the T5 setting was recorded cannot say which one a flow model's
    images were drawn with (earlier base images took SD3's T5 and 256 tokens whatever the run
    used), so they are not reused; a DDPM model has no T5 and its images still are."""
    flow = tmp_path / "flow"
    run_winrate(_sd3(), _sd3(), PROMPTS, ["toy:fidelity"], flow, **KW)
    _drop_text_encoding(flow)
    again = run_winrate(_sd3(), _sd3(), PROMPTS, ["toy:fidelity"], flow, **KW)
    assert again["images_generated"] == 4

    ddpm = tmp_path / "ddpm"
    base, tuned = tiny_sd_pipeline(seed=0), tiny_sd_pipeline(seed=1)
    run_winrate(base, tuned, PROMPTS, ["toy:fidelity"], ddpm, **KW)
    _drop_text_encoding(ddpm)
    again = run_winrate(base, tuned, PROMPTS, ["toy:fidelity"], ddpm, **KW)
    assert (again["images_generated"], again["images_reused"]) == (0, 4)


def _drop_text_encoding(out: Path) -> None:
    """settings.json as mmalign wrote it before it recorded the T5 setting."""
    path = out / "images" / "settings.json"
    old = {k: v for k, v in json.loads(path.read_text()).items() if "text_encoding" not in k}
    path.write_text(json.dumps(old))
