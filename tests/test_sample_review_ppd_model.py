"""`mmalign sample MODEL --ppd RUN`: MODEL is the base the user branch goes on (or the PPD run
itself, for its base). Another training output_dir as MODEL is refused: its tuned weights were
dropped for the PPD run's base without a word, so the images were not the model named."""

from __future__ import annotations

import json

import numpy as np
import torch
from diffusion_helpers import save_tiny, tiny_config
from PIL import Image
from safetensors.torch import save_file

from mmalign.cli import main
from mmalign.diffusion import load_pipeline, ppd
from mmalign.diffusion.recipe import DiffusionRecipe
from mmalign.train.loop import train


def test_another_run_as_the_model_is_refused(tmp_path, capsys) -> None:
    base = save_tiny(tmp_path, "sd")
    dpo = tmp_path / "dpo"
    train(tiny_config(base, dpo, train={"max_steps": 1}), DiffusionRecipe)
    run = tmp_path / "ppd"  # a PPD run folder: its adapter, users and run file
    unet = load_pipeline(base).pipe.unet
    ppd.add_user_branch(unet, 8, seed=1)
    ppd.save_adapter(unet, run)
    save_file({"t00": torch.randn(8)}, str(run / "user_embeddings.safetensors"))
    final = {"kind": "ppd", "path": str(run / ppd.ADAPTER_FILE)}
    (run / "mmalign_run.json").write_text(json.dumps({"base": str(base), "final": final}))

    def sample(model) -> int:
        out = tmp_path / "grid.png"
        return main(["sample", str(model), "--prompt", "a red circle", "--steps", "2",
                     "--ppd", str(run), "--user", "t00", "--out", str(out)])  # fmt: skip

    assert sample(base) == 0
    on_base = np.asarray(Image.open(tmp_path / "grid.png"))
    assert sample(run) == 0  # the PPD run itself: its base
    assert np.array_equal(np.asarray(Image.open(tmp_path / "grid.png")), on_base)
    capsys.readouterr()
    assert sample(dpo) == 2
    assert "is a training output_dir" in capsys.readouterr().err
