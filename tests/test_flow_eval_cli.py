"""`mmalign eval winrate` and `mmalign sample` end to end on tiny trained SD3 / FLUX runs: the
commands load a flow run's base and LoRA, sample with the pipeline's own defaults and the
run's text encoding, and write what they say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusion_helpers import tiny_config
from flow_helpers import MAX_SEQUENCE, save_tiny_flow
from PIL import Image

from mmalign.cli import main
from mmalign.data.prompts import resolve_prompts
from mmalign.diffusion.flow_recipe import diffusion_recipe
from mmalign.train.loop import train

PROMPTS = ["a red circle on a blue background", "a green square on a white background"]


def _flow_run(tmp_path: Path, family: str, *, learning_rate: float = 1e-2, **diffusion):
    """(base pipeline folder, training result, recipe) of a 2-step LoRA DPO run."""
    model = save_tiny_flow(tmp_path, family)
    flow = {"resolution": 32, "max_sequence_length": MAX_SEQUENCE, "process": "flow", **diffusion}
    cfg = tiny_config(
        model, tmp_path / "run", diffusion=flow, objective=[{"loss": "dpo", "beta": 50.0}],
        train={"max_steps": 2, "learning_rate": learning_rate},
    )  # fmt: skip
    made = []

    def make(c, accelerator):
        made.append(diffusion_recipe(c, accelerator))
        return made[-1]

    return model, train(cfg, make), made[0]


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def test_eval_winrate_on_a_flow_run(tmp_path, capsys):
    model, result, _ = _flow_run(tmp_path, "sd3")
    out = tmp_path / "eval"
    code = main(["eval", "winrate", "--tuned", str(result.output_dir), "--n", "3", "--steps", "2",
                 "--scorers", "toy:fidelity,toy:style", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "win rate" in printed and "results:" in printed
    results = json.loads((out / "results.json").read_text())
    # the base from the run file; SD3's own sampler default guidance (7.0), the steps given
    assert results["base"] == str(model) and results["tuned"] == str(result.output_dir)
    assert (results["steps"], results["guidance"], results["prompts"]) == (2, 7.0, 3)
    assert results["images_generated"] == 6 and results["images_reused"] == 0
    rows = [json.loads(line) for line in (out / "per_prompt.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == resolve_prompts("toy:heldout")[:3]
    assert set(results["scorers"]) == {"toy:fidelity", "toy:style"}
    for name, r in results["scorers"].items():
        assert r["n"] == r["prompts"] == 3
        assert r["wins"] + r["ties"] + r["losses"] == 3
        assert r["win_rate"] == (r["wins"] + 0.5 * r["ties"]) / 3
        assert 0 <= r["ci95"][0] <= r["win_rate"] <= r["ci95"][1] <= 1
        for side in ("base", "tuned"):
            mean = sum(row["scores"][name][side] for row in rows) / 3
            assert abs(r[f"{side}_mean"] - mean) < 1e-9
    assert results["scorers"]["toy:fidelity"]["at_ceiling"]["ceiling"] == 1.0
    # the tuned images are the LoRA's: each differs from the base image at its seed
    for row in rows:
        base, tuned = _pixels(out / row["base_image"]), _pixels(out / row["tuned_image"])
        assert base.shape == tuned.shape == (32, 32, 3)
        assert np.abs(base - tuned).max() > 2, row["prompt"]
    assert (out / "grid.png").is_file() and (out / "report.html").is_file()


@pytest.mark.parametrize("t5", [True, False], ids=["t5", "no-t5"])
def test_eval_winrate_samples_a_flow_base_as_its_run_does(tmp_path, capsys, t5):
    """A LoRA trained at a learning rate of 1e-12 leaves the transformer's weights as they were,
    so its images must equal the base's pixel for pixel: the base samples with the run's T5
    length (16 tokens here, not SD3's 256) and, for a run without T5, without its T5 too."""
    _, result, _ = _flow_run(tmp_path, "sd3", learning_rate=1e-12, drop_t5=not t5)
    run = json.loads((result.output_dir / "mmalign_run.json").read_text())
    assert run["t5"] is t5 and run["max_sequence_length"] == MAX_SEQUENCE
    out = tmp_path / "eval"
    code = main(["eval", "winrate", "--tuned", str(result.output_dir), "--n", "3",
                 "--steps", "2", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (out / "per_prompt.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        base, tuned = _pixels(out / row["base_image"]), _pixels(out / row["tuned_image"])
        assert np.array_equal(base, tuned), (row["prompt"], int(np.abs(base - tuned).max()))
    r = json.loads((out / "results.json").read_text())["scorers"]["toy:fidelity"]
    assert (r["ties"], r["win_rate"]) == (3, 0.5)


def test_mmalign_sample_on_a_flux_run(tmp_path, capsys):
    """As test_flow_train's SD3 test: the reloaded run samples as the trained pipeline, and
    `mmalign sample RUN` writes a grid whose images are that pipeline's at the same seeds."""
    from mmalign.diffusion import load_pipeline, load_tuned
    from mmalign.diffusion.sample import generate, sample_grid, sampling_defaults

    # 2 steps at 1e-2 move tiny FLUX's 8-bit images by at most 2 levels; 0.1 by about 18
    model, result, recipe = _flow_run(tmp_path, "flux", learning_rate=0.1, guidance=3.5)
    tuned = load_tuned(result.output_dir)
    assert tuned.family == "flux" and sampling_defaults(tuned, None, None) == (28, 3.5)
    recipe.diffusion.pipe.to("cpu")
    kw = {"seed": 3, "steps": 2, "guidance": 3.5, "batch_size": 2}
    ours = generate(recipe.diffusion.pipe, PROMPTS, **kw)
    torch.testing.assert_close(generate(tuned.pipe, PROMPTS, **kw), ours, atol=1e-5, rtol=0)

    out = tmp_path / "samples" / "grid.png"
    args = ["sample", str(result.output_dir), "--seed", "3", "--steps", "2", "--out", str(out)]
    code = main([*args, "--prompt", PROMPTS[0], "--prompt", PROMPTS[1]])
    assert code == 0, capsys.readouterr().err
    assert "grid:" in capsys.readouterr().out
    saved = _pixels(out)

    def grid(images: torch.Tensor) -> np.ndarray:  # the header names FLUX's own guidance, 3.5
        # and the run's resolution, 32 (tiny FLUX's pipeline would sample 256 px by default)
        # and each row its seed, 3 and 4
        made = sample_grid(images, PROMPTS, 3, "2 steps, cfg 3.5, 32 px")
        return np.asarray(made).astype(np.int16)

    # the run's images at the size it trained at, rounded to 8 bits as the command does
    expected = grid(generate(recipe.diffusion.pipe, PROMPTS, **kw, resolution=32))
    assert saved.shape == expected.shape
    assert np.abs(saved - expected).max() <= 1
    # ... and not the base's (encoded as the run: only the LoRA differs)
    base = load_pipeline(model)
    base.pipe.mmalign_max_sequence_length = MAX_SEQUENCE
    assert np.abs(saved - grid(generate(base.pipe, PROMPTS, **kw, resolution=32))).max() > 2
