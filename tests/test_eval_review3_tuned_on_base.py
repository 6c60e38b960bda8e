"""A tuned model that sits on its base (a LoRA, a UNet, a training output_dir) draws other images
on another base: `run_winrate` must not reuse its saved images when the base changed."""

from __future__ import annotations

from mmalign.diffusion import tiny_sd_pipeline
from mmalign.eval.winrate import on_base, run_winrate

PROMPTS = ["a red circle on a blue background", "a green square on a white background"]
KW = {"steps": 1, "guidance": 2.0, "batch_size": 2, "report": False}


def test_a_lora_on_another_base_is_drawn_again(tmp_path, capsys):
    pipes = tiny_sd_pipeline(seed=0), tiny_sd_pipeline(seed=1)
    for p in pipes:
        p.set_progress_bar_config(disable=True)
    lora = str(tmp_path / "lora")  # a LoRA folder: loaded on whichever --base is given
    (tmp_path / "lora").mkdir()
    out = tmp_path / "eval"
    run_winrate(*pipes, PROMPTS, ["toy:fidelity"], out, **KW, meta={"base": "a", "tuned": lora})
    again = run_winrate(
        *pipes, PROMPTS, ["toy:fidelity"], out, **KW, meta={"base": "b", "tuned": lora}
    )
    # the base changed, so the LoRA's images (drawn on the old base) are stale too
    assert (again["images_generated"], again["images_reused"]) == (4, 0)
    assert "images/tuned was generated with other settings" in capsys.readouterr().out


def test_a_whole_pipeline_keeps_its_images_when_the_base_changes(tmp_path):
    pipes = tiny_sd_pipeline(seed=0), tiny_sd_pipeline(seed=1)
    for p in pipes:
        p.set_progress_bar_config(disable=True)
    folder = tmp_path / "pipeline"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    assert not on_base(str(folder)) and on_base(str(tmp_path / "lora")) and on_base(None)
    out = tmp_path / "eval"
    meta = {"base": "a", "tuned": str(folder)}
    run_winrate(*pipes, PROMPTS, ["toy:fidelity"], out, **KW, meta=meta)
    again = run_winrate(*pipes, PROMPTS, ["toy:fidelity"], out, **KW, meta={**meta, "base": "b"})
    assert (again["images_generated"], again["images_reused"]) == (2, 2)
