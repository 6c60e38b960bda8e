"""`eval winrate` reuses saved images only when they were drawn on the same kind of device at
the same precision: one seed draws other images in bfloat16 than in float32. Images recorded
before the device and dtype were (no such keys) count as CPU float32, the only thing that could
draw them then, so a CPU float32 rerun still reuses them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from mmalign.diffusion import tiny_sd_pipeline
from mmalign.diffusion.sample import generate_seeded
from mmalign.eval.winrate import run_winrate

PROMPTS = ["a red circle on a blue background", "a green square on a white background"]
KW = {"steps": 2, "guidance": 2.0, "batch_size": 2, "report": False,
      "meta": {"base": "tiny0", "tuned": "tiny1"}}  # fmt: skip


def _run(base, tuned, out):
    return run_winrate(base, tuned, PROMPTS, ["toy:fidelity"], out, **KW)


def test_images_drawn_in_another_dtype_are_drawn_again(tmp_path, capsys):
    base, tuned = tiny_sd_pipeline(seed=0), tiny_sd_pipeline(seed=1)
    out = tmp_path / "eval"
    assert _run(base, tuned, out)["images_generated"] == 4
    settings = json.loads((out / "images" / "settings.json").read_text())
    assert settings["base_device"] == settings["tuned_device"] == "cpu"
    assert settings["base_dtype"] == settings["tuned_dtype"] == "float32"
    assert _run(base, tuned, out)["images_reused"] == 4  # same precision: reused

    tuned.to(torch.bfloat16)  # the tuned model only: only its images are drawn again
    again = _run(base, tuned, out)
    assert again["images_generated"] == 2 and again["images_reused"] == 2
    assert "(tuned_dtype)" in capsys.readouterr().out
    base.to(torch.bfloat16)
    assert _run(base, tuned, out)["images_generated"] == 2
    settings = json.loads((out / "images" / "settings.json").read_text())
    assert settings["base_dtype"] == settings["tuned_dtype"] == "bfloat16"


def test_a_record_without_device_and_dtype_counts_as_cpu_float32(tmp_path):
    base, tuned = tiny_sd_pipeline(seed=0), tiny_sd_pipeline(seed=1)
    out = tmp_path / "eval"
    _run(base, tuned, out)
    path = out / "images" / "settings.json"
    old = {k: v for k, v in json.loads(path.read_text()).items()
           if not k.endswith(("_device", "_dtype"))}  # fmt: skip
    path.write_text(json.dumps(old))  # as a run before the keys existed recorded it
    assert _run(base, tuned, out)["images_reused"] == 4
    path.write_text(json.dumps(old))
    base.to(torch.bfloat16)
    tuned.to(torch.bfloat16)
    assert _run(base, tuned, out)["images_generated"] == 4


def test_ppd_user_winrate_records_a_non_default_precision():
    from mmalign.eval.ppd_winrate import precision_settings

    pipe = tiny_sd_pipeline(seed=0)
    assert precision_settings(pipe, pipe) == {}  # CPU float32: the record of before
    pipe.to(torch.bfloat16)
    assert precision_settings(pipe, pipe) == {
        "base_precision": {"device": "cpu", "dtype": "bfloat16"},
        "tuned_precision": {"device": "cpu", "dtype": "bfloat16"},
    }


def test_generators_live_on_the_models_device():
    seen: list[torch.device] = []

    class Pipe:
        unet = SimpleNamespace(device=torch.device("cpu"))

        def __call__(self, prompts, generator, **kwargs):
            seen.extend(g.device for g in generator)
            return SimpleNamespace(images=torch.zeros(len(prompts), 3, 4, 4))

    images = generate_seeded(Pipe(), ["a", "b"], [1, 2], steps=1, guidance=1.0, batch_size=2)
    assert images.shape == (2, 3, 4, 4) and seen == [torch.device("cpu")] * 2
