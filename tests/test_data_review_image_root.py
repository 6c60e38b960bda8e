"""An image path a JSON reader cannot use (a NUL byte, a name over the length limit) is a
counted skip, `bad_image_path`, not a crash of the whole read."""

from __future__ import annotations

import io
import json

from PIL import Image as PILImage

from mmalign.vlm.data import open_vlm_pairs


def _png(color) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (4, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_unusable_image_path_is_counted_not_a_crash(tmp_path):
    (tmp_path / "ok.png").write_bytes(_png((255, 0, 0)))
    records = [{"prompt": "<image>q", "chosen": "a", "rejected": "b", "images": [p]}
               for p in ("ok.png", "a\x00b.png", "x" * 5000 + ".png")]  # fmt: skip
    (tmp_path / "pairs.json").write_text(json.dumps(records))
    ds, report = open_vlm_pairs(tmp_path / "pairs.json", format="trl")
    assert len(ds) == 1 and report.skipped == {"bad_image_path": 2}
