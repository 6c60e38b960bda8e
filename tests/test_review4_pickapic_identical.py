"""Pick-a-Pic rows with `are_different: false` (both images the same).

The reader drops them by default, counted as `not_different` in the report the recipe prints.
Diffusion-DPO's code filters only the ties (label_0 not in {0, 1}) and keeps them: equal
images give equal errors, so such a pair adds the constant loss log 2 and no gradient but counts
in the batch mean. `data.keep_identical: true` keeps them as that code does.
"""

from __future__ import annotations

import pytest
from diffusion_helpers import save_tiny, tiny_config
from PIL import Image

from mmalign.config import ConfigError
from mmalign.data.pickapic import write_pickapic
from mmalign.diffusion.data import open_pairs


def _shards(folder) -> None:
    red, blue = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")
    rows = [{"prompt": f"p{i}", "chosen": red, "rejected": blue} for i in range(4)]
    rows[1]["rejected"] = red
    rows[1]["are_different"] = False
    write_pickapic(rows, folder, "train")


def test_identical_pairs_are_dropped_and_counted_by_default(tmp_path):
    _shards(tmp_path / "pp")
    rows, report = open_pairs(str(tmp_path / "pp"), "train")
    assert len(rows) == report.kept == 3 and report.skipped == {"not_different": 1}
    assert "not_different: 1 (rows 1)" in str(report)
    assert "data.keep_identical" in str(report)  # the report says how to keep them
    kept, report = open_pairs(str(tmp_path / "pp"), "train", require_different=False)
    assert len(kept) == report.kept == 4 and not report.skipped


@pytest.mark.parametrize("keep", [False, True])
def test_the_recipe_setting_keeps_them(tmp_path, capsys, keep):
    from accelerate import Accelerator

    from mmalign.diffusion.recipe import DiffusionRecipe

    _shards(tmp_path / "pp")
    data = {"path": str(tmp_path / "pp"), "toy": None, "keep_identical": keep}
    cfg = tiny_config(save_tiny(tmp_path), tmp_path / "out", data=data)
    assert cfg.data.keep_identical is keep
    recipe = DiffusionRecipe(cfg, Accelerator(cpu=True))
    assert len(recipe.rows) == (4 if keep else 3)
    printed = capsys.readouterr().out
    assert ("not_different: 1" in printed) is not keep  # a drop is reported, never silent


def test_the_default_is_to_drop_them(tmp_path):
    cfg = tiny_config("toy:sd", tmp_path)
    assert cfg.data.keep_identical is False
    with pytest.raises(ConfigError, match=r"data\.keep_identical"):
        tiny_config("toy:sd", tmp_path, data={"keep_identical": "sometimes"})
