"""An evaluation killed while it writes a PNG resumes: the half-written file is never taken for
a saved image (it was, and the next run failed reading it or scored a broken image)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from mmalign.diffusion import tiny_sd_pipeline
from mmalign.eval.winrate import run_winrate

PROMPTS = ["a red circle on a blue background", "a green square on a white background"]
KW = {"steps": 1, "guidance": 2.0, "batch_size": 1, "report": False,
      "meta": {"base": "a", "tuned": "b"}}  # fmt: skip


def test_a_png_cut_off_mid_write_is_drawn_again(tmp_path, monkeypatch):
    pipes = tiny_sd_pipeline(seed=0), tiny_sd_pipeline(seed=1)
    for p in pipes:
        p.set_progress_bar_config(disable=True)
    save, calls = Image.Image.save, []

    def killed_on_the_second(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) < 2:
            return save(self, fp, *args, **kwargs)
        buf = io.BytesIO()
        save(self, buf, format="PNG")
        with open(fp, "wb") as f:  # the process dies with half the bytes on disk
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", killed_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        run_winrate(*pipes, PROMPTS, ["toy:fidelity"], tmp_path / "eval", **KW)
    monkeypatch.setattr(Image.Image, "save", save)
    again = run_winrate(*pipes, PROMPTS, ["toy:fidelity"], tmp_path / "eval", **KW)
    assert (again["images_generated"], again["images_reused"]) == (3, 1)
    fresh = run_winrate(*pipes, PROMPTS, ["toy:fidelity"], tmp_path / "fresh", **KW)
    assert again["scorers"] == fresh["scorers"]
