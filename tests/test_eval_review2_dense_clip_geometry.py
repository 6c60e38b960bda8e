"""A dense head with the CLIP backbone on a non-square image: its heatmaps are mapped over the
whole image (the scorer resizes the [M, M] map to the image's H x W, and training pools the
target heatmaps of the whole image to [M, M]), so the vision tower must see the whole image
too. It saw CLIP's centre crop: a flaw outside the crop never reached the tower, and one inside
it came back stretched over the whole width, away from where it is. The CLIP head now resizes
the whole image to the tower's square (no crop), as the SigLIP head does, so the token grid,
the decoder's pixel path and the returned map all cover the same image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from test_dense_reward import save_tiny_clip
from torch import nn

from mmalign.rewards import get_scorer
from mmalign.rewards.dense import DenseRewardModel


class _GridDecoder(nn.Module):
    """Tokens [B, g*g, 1] (what each patch of the tower's input held) -> a map [B, 2, M, M]."""

    def __init__(self, grid: int, size: int) -> None:
        super().__init__()
        self.grid, self.size = grid, size

    def forward(self, tokens: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        x = tokens[..., 0].reshape(b, 1, self.grid, self.grid)
        x = F.interpolate(x, size=(self.size, self.size), mode="nearest")
        return x.expand(-1, 2, -1, -1)


def _brightness_head(tmp_path):
    """The real CLIP head's preprocessing, with a tower and decoder that report, per patch of
    the tower's input, how bright it is (1 = a flaw): the map shows where the tower saw it."""
    save_tiny_clip(tmp_path / "clip")
    model = DenseRewardModel.from_backbone(str(tmp_path / "clip"), dim=32, heads=2, depth=1)
    scorer = get_scorer(f"dense:{model.save_pretrained(tmp_path / 'head')}", device="cpu")
    head = scorer.model
    s, grid = head.config.image_size, head.grid
    patch = s // grid

    def fuse(pixels, ids, mask):  # the tower's input, seen patch by patch
        x = head.preprocess(pixels)
        assert x.shape[-2:] == (s, s)
        bright = F.avg_pool2d(x.mean(1, keepdim=True), patch)  # [B,1,g,g]
        lo, hi = bright.amin((2, 3), keepdim=True), bright.amax((2, 3), keepdim=True)
        tokens = ((bright - lo) / (hi - lo).clamp(min=1e-6)).flatten(2).transpose(1, 2)
        return tokens, torch.zeros(len(x), 4)

    head.fuse = fuse
    head.decoder = _GridDecoder(grid, head.config.map_size)
    return scorer


def _flaw_image(h: int, w: int, rows: slice, cols: slice) -> torch.Tensor:
    image = torch.zeros(1, 3, h, w)
    image[..., rows, cols] = 1.0
    return image


def test_clip_head_maps_a_flaw_to_its_place_on_a_non_square_image(tmp_path):
    scorer = _brightness_head(tmp_path)
    s = scorer.model.config.image_size  # 32, a 4 x 4 grid of 8 px patches
    h, w = s, 2 * s  # 32 x 64: the centre crop would keep columns 16-47 only
    # a flaw outside the centre crop (one patch of the whole image resized to 32 x 32) and one
    # inside it but off its centre
    for cols in (slice(0, 16), slice(48, 64)):
        rows = slice(8, 16)
        image = _flaw_image(h, w, rows, cols)
        heat = scorer.dense(image, ["a red circle"])["artifact"][0, 0]
        assert heat.shape == (h, w)
        inside = torch.zeros(h, w, dtype=torch.bool)
        inside[rows, cols] = True
        peak = int(heat.argmax())
        assert inside.flatten()[peak], (cols, divmod(peak, w))
        # the map is high on the flaw and low away from it (bilinear edges aside)
        core = heat[rows.start + 2 : rows.stop - 2, cols.start + 3 : cols.stop - 3]
        assert float(core.min()) > 0.9, (cols, float(core.min()))
        far = heat[24:, :] if rows.start < 16 else heat[:8, :]
        assert float(far.max()) < 0.1, (cols, float(far.max()))


def test_square_images_are_preprocessed_as_before(tmp_path):
    """For a square image the whole-image resize is CLIP's own preprocessing (nothing to crop):
    a head trained on square images scores them unchanged."""
    from mmalign.rewards.common import clip_pixels

    save_tiny_clip(tmp_path / "clip")
    model = DenseRewardModel.from_backbone(str(tmp_path / "clip"), dim=32, heads=2, depth=1)
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.preprocess(images), clip_pixels(images, 32))
