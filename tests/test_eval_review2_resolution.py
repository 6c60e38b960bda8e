"""`mmalign sample` and `mmalign eval winrate` sample at the training run's resolution.

Both sampled at the pipeline's default size whatever the run trained at (SD3 and FLUX recipes
train at 512 against their 1024 default), and neither had a `--resolution` option. Now
`--resolution N` sets it, and without it a training output_dir samples at the `resolution` its
`mmalign_run.json` records; anything else at the pipeline's default. A run at the default
size (every toy recipe) samples exactly as before: the images are the same and a win-rate
folder's saved images stay valid.
"""

from __future__ import annotations

import json

import pytest
import torch
from diffusion_helpers import save_tiny, tiny_config
from PIL import Image

from mmalign.cli import main

TRAINED = 48  # the tiny pipeline's default is 32 (a 16-latent UNet, VAE factor 2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from mmalign.diffusion.recipe import DiffusionRecipe
    from mmalign.train.loop import train

    root = tmp_path_factory.mktemp("resolution")
    tiny = save_tiny(root)
    out = {}
    for name, res in (("run48", TRAINED), ("run_default", None)):
        cfg = tiny_config(tiny, root / name, train={"max_steps": 1},
                          diffusion={"resolution": res})  # fmt: skip
        train(cfg, DiffusionRecipe)
        out[name] = root / name
    out["tiny"] = tiny
    return out


@pytest.fixture
def sampled(monkeypatch):
    """The images `mmalign sample` generated, call by call."""
    import mmalign.diffusion.sample as sample

    images: list[torch.Tensor] = []
    real = sample.generate

    def spy(*args, **kwargs):
        images.append(real(*args, **kwargs))
        return images[-1]

    monkeypatch.setattr(sample, "generate", spy)
    return images


def _sample(model, tmp_path, *extra) -> int:
    return main(["sample", str(model), "--prompt", "a red circle", "--steps", "2",
                 "--out", str(tmp_path / "grid.png"), *extra])  # fmt: skip


def test_sample_uses_the_runs_resolution_unless_told(runs, tmp_path, sampled, capsys):
    assert json.loads((runs["run48"] / "mmalign_run.json").read_text())["resolution"] == TRAINED
    assert _sample(runs["run48"], tmp_path) == 0, capsys.readouterr().err
    assert _sample(runs["run48"], tmp_path, "--resolution", "32") == 0
    assert _sample(runs["tiny"], tmp_path) == 0  # a pipeline: its default
    assert _sample(runs["run_default"], tmp_path) == 0  # trained at the default
    sizes = [tuple(images.shape[-2:]) for images in sampled]
    assert sizes == [(TRAINED, TRAINED), (32, 32), (32, 32), (32, 32)]


def test_a_run_at_the_default_resolution_samples_the_same_images(runs, tmp_path, sampled):
    """What every toy recipe does: no resolution in the recipe, the default recorded; the
    images are those of the call without a size."""
    from mmalign.diffusion import load_tuned
    from mmalign.diffusion.sample import generate, sampling_defaults

    assert _sample(runs["run_default"], tmp_path) == 0
    assert _sample(runs["run_default"], tmp_path, "--resolution", "32") == 0
    model = load_tuned(runs["run_default"])
    steps, guidance = sampling_defaults(model, 2, None)
    before = generate(model.pipe, ["a red circle"], seed=0, steps=steps, guidance=guidance,
                      batch_size=16)  # fmt: skip
    assert torch.equal(sampled[0], before) and torch.equal(sampled[1], before)


def test_bad_resolution_is_an_input_error(runs, tmp_path, capsys):
    assert _sample(runs["tiny"], tmp_path, "--resolution", "33") == 2
    assert "--resolution 33" in capsys.readouterr().err
    assert _sample(runs["tiny"], tmp_path, "--resolution", "0") == 2


def _winrate(runs, out, *extra) -> int:
    return main(["eval", "winrate", "--tuned", str(runs), "--prompts", "toy:heldout:2",
                 "--steps", "2", "--out", str(out), *extra])  # fmt: skip


def _png_sizes(out) -> set[tuple[int, int]]:
    return {Image.open(p).size for p in (out / "images").rglob("*.png")}


def test_winrate_samples_both_models_at_the_runs_resolution(runs, tmp_path, capsys):
    out = tmp_path / "eval"
    assert _winrate(runs["run48"], out) == 0, capsys.readouterr().err
    assert _png_sizes(out) == {(TRAINED, TRAINED)}
    assert json.loads((out / "results.json").read_text())["resolution"] == TRAINED
    # another resolution in the same folder: the saved images are drawn again, at that size
    assert _winrate(runs["run48"], out, "--resolution", "32") == 0
    assert _png_sizes(out) == {(32, 32)}
    results = json.loads((out / "results.json").read_text())
    assert results["resolution"] == 32 and results["images_reused"] == 0


def test_winrate_at_the_default_resolution_keeps_saved_images(runs, tmp_path, capsys):
    """Images saved before `--resolution` existed (settings without it) are reused: sampling at
    the default size draws exactly what was drawn then."""
    out = tmp_path / "eval"
    assert _winrate(runs["run_default"], out) == 0, capsys.readouterr().err
    assert _png_sizes(out) == {(32, 32)}
    settings = out / "images" / "settings.json"
    old = json.loads(settings.read_text())
    old.pop("resolution", None)  # as an older mmalign wrote it
    settings.write_text(json.dumps(old))
    first = json.loads((out / "results.json").read_text())
    assert _winrate(runs["run_default"], out, "--resolution", "32") == 0
    again = json.loads((out / "results.json").read_text())
    assert again["images_reused"] == 4 and again["images_generated"] == 0
    assert again["scorers"] == first["scorers"]


def test_implicit_accuracy_scores_pairs_at_the_runs_resolution(runs, tmp_path, monkeypatch):
    """`eval accuracy --model` / `data diagnose` on SD runs scored the pairs at the default
    size (the flow path already read the run's resolution)."""
    import mmalign.diffusion.data as data
    from mmalign.data.schema import write_pairs
    from mmalign.eval.implicit import score_pairs

    seen: list[int] = []
    real = data.PairImages

    def spy(rows, resolution, *args, **kwargs):
        seen.append(resolution)
        return real(rows, resolution, *args, **kwargs)

    monkeypatch.setattr(data, "PairImages", spy)
    rows = [{"prompt": "a red square", "chosen": Image.new("RGB", (40, 40), "red"),
             "rejected": Image.new("RGB", (40, 40), "black"), "label": 1.0}]  # fmt: skip
    write_pairs(rows, tmp_path / "pairs", "image")
    score_pairs(str(runs["run48"]), str(tmp_path / "pairs"), draws=1, device="cpu")
    score_pairs(str(runs["tiny"]), str(tmp_path / "pairs"), base=str(runs["tiny"]), draws=1,
                device="cpu")  # fmt: skip
    assert seen == [TRAINED, 32]
