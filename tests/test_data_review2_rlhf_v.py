"""LLaVA reader review 2: RLHF-V as released (hub `openbmb/RLHF-V-Dataset`: `image` and a
`text` column holding the JSON object {"question", "chosen", "rejected"}, no `conversations`),
whose card names the LLaVA reader. Before, the reader refused it (no `conversations`) and
`open_vlm_pairs` could not tell its format."""

from __future__ import annotations

import io
import json

from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from mmalign.data.llava_format import llava_pairs
from mmalign.vlm.data import detect_format, open_vlm_pairs


def _png() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (16, 16), (0, 160, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def _record(i: int, text: str | None = None) -> dict:
    pair = {"question": "Describe the image.", "chosen": f"A green square {i}.",
            "rejected": f"A red circle {i}."}  # fmt: skip
    return {"ds_name": "RLHF-V", "image": {"bytes": _png(), "path": None},
            "text": json.dumps(pair) if text is None else text, "origin_dataset": "x",
            "origin_split": "{}", "idx": i, "image_path": f"{i}.jpg"}  # fmt: skip


def test_rlhf_v_text_column_is_read_and_a_bad_one_counted():
    ds, report = llava_pairs([_record(0), _record(1, text="not json")], image_root=None)
    assert report.kept == 1 and report.skipped == {"bad_text": 1}
    assert (ds[0]["prompt"], ds[0]["chosen"], ds[0]["rejected"]) == (
        "Describe the image.", "A green square 0.", "A red circle 0.")  # fmt: skip
    assert tuple(ds[0]["image"].convert("RGB").getpixel((0, 0))) == (0, 160, 0)


def test_open_vlm_pairs_detects_the_released_layout(tmp_path):
    features = Features({"ds_name": Value("string"), "image": Image(), "text": Value("string"),
                         "origin_dataset": Value("string"), "origin_split": Value("string"),
                         "idx": Value("int64"), "image_path": Value("string")})  # fmt: skip
    Dataset.from_list([_record(i) for i in range(3)], features=features).save_to_disk(
        str(tmp_path / "rlhf_v")
    )
    ds, report = open_vlm_pairs(str(tmp_path / "rlhf_v"), "train")
    assert len(ds) == 3 and report.kept == 3 and ds[2]["chosen"] == "A green square 2."
    # a `text` column that is not RLHF-V's object is no reason to pick the LLaVA reader
    plain = {"prompt": "p", "chosen": "a", "rejected": "b", "text": "free text"}
    assert detect_format(list(plain), plain) == "trl"
