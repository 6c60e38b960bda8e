"""`mmalign invert`: a resolution of 0 is bad input, not a silent fallback to the model's own."""

from __future__ import annotations

import pytest
from diffusion_helpers import save_tiny
from PIL import Image

from mmalign.cli import main


@pytest.mark.parametrize("resolution", ["0", "-8"])
def test_a_non_positive_resolution_is_refused_before_anything_is_written(
    tmp_path, capsys, resolution
):
    model = save_tiny(tmp_path)
    image = tmp_path / "img.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    out = tmp_path / "out"
    argv = ["invert", str(model), "--image", str(image), "--prompt", "a red square",
            "--out", str(out), "--steps", "2", "--iterations", "1",
            "--resolution", resolution]  # fmt: skip
    assert main(argv) == 2
    assert "--resolution" in capsys.readouterr().err
    assert not out.exists()
