"""Side-by-side image grids (PNG) for validation samples and evaluation reports."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

CELL = 128  # toy images are 32 px: scale small images up so a grid is readable
LABEL_H = 14


def _cell(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    if max(image.size) < CELL:
        return image.resize((CELL, CELL), Image.Resampling.NEAREST)
    return image.resize((CELL, CELL), Image.Resampling.LANCZOS)


def image_grid(
    columns: Sequence[Sequence[Image.Image]],
    headers: Sequence[str],
    row_labels: Sequence[str] | None = None,
    notes: Sequence[Sequence[str]] | None = None,
) -> Image.Image:
    """Images in columns (one column per model), a header per column, a label per row and an
    optional note under each image (e.g. its score)."""
    n_rows = max(len(c) for c in columns)
    label_w = 260 if row_labels else 0
    note_h = LABEL_H if notes else 0
    width = label_w + len(columns) * CELL
    height = LABEL_H + n_rows * (CELL + note_h)
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    for j, header in enumerate(headers):
        draw.text((label_w + j * CELL + 4, 1), header, fill="black")
    for i in range(n_rows):
        y = LABEL_H + i * (CELL + note_h)
        if row_labels:
            draw.text((4, y + CELL // 2 - 6), row_labels[i][:42], fill="black")
        for j, column in enumerate(columns):
            if i < len(column):
                grid.paste(_cell(column[i]), (label_w + j * CELL, y))
                if notes:
                    draw.text((label_w + j * CELL + 4, y + CELL), notes[j][i], fill="black")
    return grid
