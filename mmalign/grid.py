"""Image grids (PNG) for validation samples, `mmalign sample` and the win-rate evaluation.

`image_grid`: images in columns (one per model or step), a label per row. `pair_grid`: what a
person compares in a win-rate evaluation, laid out to be read: one card per prompt (and seed)
with the whole prompt wrapped above its base/tuned pair, the scores under each image, a frame
on the image the first scorer prefers, several cards per row, and a legend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

CELL = 128  # toy images are 32 px: scale small images up so a grid is readable
LABEL_H = 14
PAD = 8  # between and around images
LINE = 16  # text line height at FONT_SIZE
FONT_SIZE = 13
WIN = (45, 164, 78)  # the frame on the preferred image (the HTML report's green)
MUTED = (87, 96, 106)


def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # scalable where Pillow has FreeType
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _cell(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    if max(image.size) < CELL:
        return image.resize((CELL, CELL), Image.Resampling.NEAREST)
    return image.resize((CELL, CELL), Image.Resampling.LANCZOS)


def wrap(text: str, width: int, font, draw: ImageDraw.ImageDraw) -> list[str]:
    """`text` in lines no wider than `width` pixels, broken at spaces (a word longer than a
    line is cut into pieces): the whole prompt is shown, never truncated."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if draw.textlength(candidate, font=font) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while draw.textlength(word, font=font) > width:  # one long token: split it
            cut = max(1, next(i for i in range(len(word), 0, -1)
                              if draw.textlength(word[:i], font=font) <= width))  # fmt: skip
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    if line:
        lines.append(line)
    return lines or [""]


def image_grid(
    columns: Sequence[Sequence[Image.Image]],
    headers: Sequence[str],
    row_labels: Sequence[str] | None = None,
    notes: Sequence[Sequence[str]] | None = None,
) -> Image.Image:
    """Images in columns (one column per model), a header per column and a label per row (both
    wrapped, never cut: a header wider than its column takes more lines) and an optional note
    under each image (e.g. its score)."""
    font = _font()
    n_rows = max(len(c) for c in columns)
    label_w = 260 if row_labels else 0
    note_h = LINE if notes else 0
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    labels = [wrap(t, label_w - 2 * PAD, font, probe) for t in row_labels or []]
    heads = [wrap(h, CELL - 8, font, probe) for h in headers]
    row_h = [max(CELL + note_h, len(labels[i]) * LINE if labels else 0) for i in range(n_rows)]
    width = label_w + len(columns) * CELL
    head_h = LINE * max((len(h) for h in heads), default=1)
    height = head_h + sum(row_h)
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    for j, lines in enumerate(heads):
        for k, text in enumerate(lines):
            draw.text((label_w + j * CELL + 4, 1 + k * LINE), text, fill="black", font=font)
    y = head_h
    for i in range(n_rows):
        if labels:
            for k, text in enumerate(labels[i]):
                draw.text((PAD, y + k * LINE), text, fill="black", font=font)
        for j, column in enumerate(columns):
            if i < len(column):
                grid.paste(_cell(column[i]), (label_w + j * CELL, y))
                if notes:
                    draw.text((label_w + j * CELL + 4, y + CELL), notes[j][i], fill="black",
                              font=font)  # fmt: skip
        y += row_h[i]
    return grid


def pair_grid(
    prompts: Sequence[str],
    base: Sequence[Image.Image],
    tuned: Sequence[Image.Image],
    scores: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    seeds: Sequence[int] | None = None,
    numbers: Sequence[int] | None = None,
    per_row: int = 4,
    title: str = "",
) -> Image.Image:
    """One card per item: its number and prompt (wrapped), then base | tuned at the same seed,
    each with its scores under it; a green frame marks the image the first scorer prefers.
    `numbers`: each card's prompt index (the win-rate evaluation's `prompt_index`, which the
    report and the image files use; several seeds of a prompt share it), default 0, 1, 2, ..."""
    font, small = _font(), _font(FONT_SIZE - 2)
    names = list(scores)
    card_w = 2 * CELL + 3 * PAD
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    numbers = range(len(prompts)) if numbers is None else numbers
    if len(numbers) != len(prompts):
        raise ValueError(f"pair_grid: {len(numbers)} numbers for {len(prompts)} prompts")
    texts = [
        wrap(f"{numbers[i]}. {p}" + (f"  (seed {seeds[i]})" if seeds else ""), card_w - 2 * PAD,
             font, probe)
        for i, p in enumerate(prompts)
    ]  # fmt: skip
    images_h = LINE + CELL + PAD // 2 + len(names) * LINE  # "base"/"tuned", image, scores
    cols = max(1, min(per_row, len(prompts)))
    n_rows = -(-len(prompts) // cols)
    text_h = [
        max(len(texts[i]) for i in range(r * cols, min(len(prompts), (r + 1) * cols))) * LINE
        for r in range(n_rows)
    ]
    first = names[0] if names else None
    width = cols * card_w + (cols + 1) * PAD
    legend_text = [
        "Each card: the prompt, then the base model (left) and the tuned model (right), same seed.",
        f"Under each image its score{'s' if len(names) > 1 else ''} ({', '.join(names)}); a "
        f"green frame marks the image {first} scores higher; a score in green beats the other "
        "image's.",
    ]
    legend = [line for text in legend_text for line in wrap(text, width - 2 * PAD, small, probe)]
    big = _font(FONT_SIZE + 2)
    title_lines = wrap(title, width - 2 * PAD, big, probe) if title else []
    head_h = PAD + len(title_lines) * (LINE + 2) + len(legend) * LINE + PAD
    height = head_h + sum(h + images_h + 2 * PAD for h in text_h) + PAD
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    y = PAD
    for line in title_lines:
        draw.text((PAD, y), line, fill="black", font=big)
        y += LINE + 2
    for line in legend:
        draw.text((PAD, y), line, fill=MUTED, font=small)
        y += LINE
    y = head_h
    for r in range(n_rows):
        card_h = text_h[r] + images_h + PAD
        for c in range(cols):
            i = r * cols + c
            if i >= len(prompts):
                break
            x = PAD + c * (card_w + PAD)
            draw.rectangle((x, y, x + card_w, y + card_h), outline=(216, 222, 228))
            for k, line in enumerate(texts[i]):
                draw.text((x + PAD, y + PAD // 2 + k * LINE), line, fill="black", font=font)
            top = y + PAD // 2 + text_h[r]
            for side, image in enumerate((base[i], tuned[i])):
                left = x + PAD + side * (CELL + PAD)
                draw.text((left, top), ("base", "tuned")[side], fill=MUTED, font=small)
                grid.paste(_cell(image), (left, top + LINE))
                if first is not None:
                    mine, other = scores[first][side][i], scores[first][1 - side][i]
                    if mine > other:
                        draw.rectangle((left - 2, top + LINE - 2, left + CELL + 1,
                                        top + LINE + CELL + 1), outline=WIN, width=3)  # fmt: skip
                for k, name in enumerate(names):
                    value = scores[name][side][i]
                    better = value > scores[name][1 - side][i]
                    draw.text((left, top + LINE + CELL + PAD // 2 + k * LINE),
                              f"{name} {value:.3f}", fill=WIN if better else MUTED,
                              font=small)  # fmt: skip
        y += card_h + PAD
    return grid
