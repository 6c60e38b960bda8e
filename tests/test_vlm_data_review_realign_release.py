"""Re-Align's released training file (the layout `train_rdpo.py` reads): `image`,
`retrieved_image` and `chosen` / `rejected` as whole role/content conversations, with no
`question` key. It used to be refused outright ("no record has the field 'question'")."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image as PILImage

from mmalign.vlm.data import open_vlm_pairs


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (16, 16), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _turns(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def test_the_released_conversation_layout_reads(tmp_path):
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "a.png").write_bytes(_png((255, 0, 0)))
    (tmp_path / "coco" / "b.png").write_bytes(_png((0, 0, 255)))
    q = "<image>\nWhat colour is the square?"
    records = [
        {"image": "coco/a.png", "retrieved_image": "coco/b.png",
         "chosen": _turns(q, "The square is red."), "rejected": _turns(q, "The square is blue.")},
        {"image": "coco/a.png", "retrieved_image": "coco/b.png",  # the user turns differ
         "chosen": _turns(q, "Red."), "rejected": _turns("<image>\nOther?", "Blue.")},
        {"image": "coco/a.png", "retrieved_image": "coco/b.png",  # two turns before the answer
         "chosen": [{"role": "system", "content": "Be brief."}, *_turns(q, "Red.")],
         "rejected": [{"role": "system", "content": "Be brief."}, *_turns(q, "Blue.")]},
    ]  # fmt: skip
    path = tmp_path / "pref_data.json"
    path.write_text(json.dumps(records))
    ds, report = open_vlm_pairs(path, "train")
    assert report.kept == 1
    assert report.skipped == {"prompt_mismatch": 1, "multi_turn_prompt": 1}
    assert ds["prompt"] == [q] and ds["source"] == ["re-align"]
    assert ds["chosen"] == ["The square is red."] and ds["rejected"] == ["The square is blue."]
    retrieved = np.asarray(ds[0]["retrieved_image"].convert("RGB"))[0, 0].tolist()
    assert retrieved == [0, 0, 255]


def test_a_record_without_any_question_is_counted(tmp_path):
    (tmp_path / "a.png").write_bytes(_png((255, 0, 0)))
    records = [
        {"image": "a.png", "question": "Colour?", "chosen": "red", "rejected": "blue",
         "image_neg": "a.png"},
        {"image": "a.png", "chosen": "red", "rejected": "blue", "image_neg": "a.png"},
    ]  # fmt: skip
    path = tmp_path / "r.json"
    path.write_text(json.dumps(records))
    _, report = open_vlm_pairs(path, "train")
    assert report.kept == 1 and report.skipped == {"missing_prompt": 1}
