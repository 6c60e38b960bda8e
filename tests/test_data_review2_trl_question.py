"""TRL reader review 2: RLAIF-V (hub `openbmb/RLAIF-V-Dataset`: `question`, `image`, `chosen`,
`rejected`), whose card names the TRL reader, is read by it: the question is the prompt.
Before, every row was skipped as `missing_prompt` and `mmalign data show rlaif_v` failed."""

from __future__ import annotations

import io

from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from mmalign.data.trl_format import trl_pairs
from mmalign.vlm.data import open_vlm_pairs


def _png() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (16, 16), (0, 0, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


RLAIF_V = {"ds_name": "RLAIF-V", "question": "What color is the square?", "chosen": "Blue.",
           "rejected": "Red.", "origin_dataset": "toy", "origin_split": "{}", "idx": 0,
           "image_path": "x.png"}  # fmt: skip


def test_rlaif_v_rows_take_their_question_as_the_prompt():
    ds, report = trl_pairs([{**RLAIF_V, "image": _png()}], image_root=None)
    assert report.kept == 1 and report.skipped == {}
    assert (ds[0]["prompt"], ds[0]["chosen"], ds[0]["rejected"]) == (
        "What color is the square?", "Blue.", "Red.")  # fmt: skip
    # a prompt, when there is one, wins over a question
    ds, _ = trl_pairs([{**RLAIF_V, "prompt": "Name the colour.", "image": _png()}],
                      image_root=None)  # fmt: skip
    assert ds[0]["prompt"] == "Name the colour."


def test_open_vlm_pairs_with_the_cards_reader(tmp_path):
    features = Features({**{k: Value("string") for k in RLAIF_V if k != "idx"},
                         "idx": Value("int64"), "image": Image()})  # fmt: skip
    rows = [{**RLAIF_V, "idx": i, "image": {"bytes": _png(), "path": None}} for i in range(3)]
    Dataset.from_list(rows, features=features).save_to_disk(str(tmp_path / "rlaif"))
    ds, report = open_vlm_pairs(str(tmp_path / "rlaif"), "train", format="trl")
    assert len(ds) == 3 and report.kept == 3 and set(ds["prompt"]) == {RLAIF_V["question"]}
