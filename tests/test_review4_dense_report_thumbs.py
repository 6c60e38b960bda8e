"""`mmalign eval dense`'s HTML report embeds thumbnails (longest side 256 px, as report.html),
not full-size images: 16 RichHF cards made a page of about 40 MB. Each heatmap overlay is
resized with its image, so it still lands on the flawed region; every card keeps its image and
one overlay per heatmap channel, truth and prediction."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import torch
from PIL import Image

from mmalign.data.dense import DENSE_SCORES, DenseRow
from mmalign.data.schema import HEATMAP_CHANNELS
from mmalign.eval.dense import write_report

W, H = 640, 480  # larger than a thumbnail, not square
CARDS = 3
THUMB = 256


def _rows() -> list[DenseRow]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(CARDS):
        pixels = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)  # noise: PNG cannot shrink it
        heat = np.zeros((2, H, W), dtype=np.float32)
        heat[:, :, : W // 2] = 1.0  # the left half flawed, in truth and prediction
        scores = {k: 0.5 for k in DENSE_SCORES}
        rows.append(DenseRow(f"prompt {i}", Image.fromarray(pixels), heat, scores, f"row{i}"))
    return rows


def _result(rows: list[DenseRow]) -> dict:
    maps = {k: torch.from_numpy(np.stack([r.heatmaps[c] for r in rows]))
            for c, k in enumerate(HEATMAP_CHANNELS)}  # fmt: skip
    scores = {k: torch.full((len(rows),), 0.5) for k in DENSE_SCORES}
    metrics = {k: {"plcc": 0.0, "srcc": 0.0, "mse": 0.0} for k in DENSE_SCORES}
    heat = {"mse": 0.0, "mse_empty": 0.0, "cc": 0.0, "images_with_flaws": len(rows)}
    return {"rows": len(rows), "scores": metrics, "heatmaps": dict.fromkeys(HEATMAP_CHANNELS, heat),
            "_pred": {**scores, **maps}, "_true": {**scores, **maps},
            "_order": list(range(len(rows)))}  # fmt: skip


def _decode(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2])))


def test_report_of_large_images_embeds_thumbnails_with_aligned_overlays(tmp_path) -> None:
    rows = _rows()
    page = write_report(_result(rows), rows, tmp_path, sample=CARDS)
    text = page.read_text()
    # each embedded image at most 256 x 192 RGB; full-size noise PNGs would be ~6x that
    per_image = THUMB * THUMB * 3 * 4 / 3
    figures = 1 + 2 * len(HEATMAP_CHANNELS)
    assert len(text) < CARDS * figures * per_image + 50_000
    cards = text.split('<div class="card">')[1:]
    assert len(cards) == CARDS
    for card in cards:
        captions = re.findall(r"<figcaption>([^<]*)</figcaption>", card)
        want = ["image"] + [f"{k} {s}" for k in HEATMAP_CHANNELS for s in ("truth", "predicted")]
        assert captions == want  # the image and one overlay per channel, truth and prediction
        for url in re.findall(r'<img src="(data:image/png;base64,[^"]+)"', card):
            im = _decode(url).convert("RGB")
            assert im.size == (THUMB, THUMB * H // W)
        overlay = np.asarray(_decode(re.findall(r'src="([^"]+)"', card)[1]).convert("RGB"))
        w = overlay.shape[1]
        left, right = overlay[:, : w // 2 - 4], overlay[:, w // 2 + 4 :]
        assert (left[..., 0] > 200).mean() > 0.95 and left[..., 1:].max() < 60  # red flaw
        assert right[..., 0].mean() < 0.6 * 255 and right[..., 1].mean() > 40  # image, darkened


def test_small_images_are_still_shown_enlarged(tmp_path) -> None:
    # the toy world's 32 px images: enlarged as before (at least 160 px a side), not shrunk
    rng = np.random.default_rng(1)
    heat = np.zeros((2, 32, 32), dtype=np.float32)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    rows = [DenseRow("p", image, heat, {k: 0.5 for k in DENSE_SCORES}, "r")]
    text = write_report(_result(rows), rows, tmp_path, sample=1).read_text()
    urls = re.findall(r'<img src="(data:image/png;base64,[^"]+)"', text)
    assert len(urls) == 1 + 2 * len(HEATMAP_CHANNELS)
    assert all(_decode(u).size == (160, 160) for u in urls)
