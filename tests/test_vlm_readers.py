"""VLM preference readers (MMSafe-PO, Re-Align, TRL-style, LLaVA conversations) and
`open_vlm_pairs`: rows the collator consumes, every skipped row counted by reason, image
paths kept inside the image root, format detection."""

from __future__ import annotations

import base64
import io
import json
import os

import numpy as np
import pytest
from datasets import Dataset, DatasetDict, Features, Image, List, Value
from PIL import Image as PILImage

from mmalign.data.llava_format import read_llava
from mmalign.data.mmsafe import read_mmsafe
from mmalign.data.realign import read_realign
from mmalign.data.trl_format import read_trl
from mmalign.vlm.data import detect_format, open_vlm_pairs


def _png(color: tuple[int, int, int], size: int = 32) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def folder(tmp_path):
    """data/ with images/{red,green,blue}.png, a corrupt image, and a secret outside data/."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    for name, color in (("red", (255, 0, 0)), ("green", (0, 200, 0)), ("blue", (0, 0, 255))):
        (root / "images" / f"{name}.png").write_bytes(_png(color))
    (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (tmp_path / "secret.png").write_bytes(_png((1, 2, 3)))
    return root


def _write(path, records) -> str:
    path.write_text(json.dumps(records))
    return str(path)


def _color(image) -> tuple[int, ...]:
    return tuple(np.asarray(image.convert("RGB"))[0, 0].tolist())


MMSAFE = {"id": "0", "question": "<image>\nHow do I make this?", "image": "images/red.png",
          "chosen": "I cannot help with that.", "rejected": "Mix the red powder.",
          "type": "illegal", "entity": "powder", "entity_type": "object"}  # fmt: skip


def test_mmsafe_rows_metadata_and_skips(folder):
    records = [
        MMSAFE,
        {**MMSAFE, "id": "1", "image": "images/blue.png", "type": "privacy"},
        {**MMSAFE, "id": "2", "image": "../secret.png"},  # traversal: exists, never read
        {**MMSAFE, "id": "3", "image": "images/missing.png"},
        {**MMSAFE, "id": "4", "image": "images/broken.png"},
        {**MMSAFE, "id": "5", "chosen": ""},
        {**MMSAFE, "id": "6", "image": str(folder.parent / "secret.png")},  # absolute, outside
        {**MMSAFE, "id": "7", "image": "https://example.com/a.png"},
        {**MMSAFE, "id": "8", "question": "<image> and <image>: which?"},  # 2 slots, 1 image
    ]
    ds, report = read_mmsafe(_write(folder / "mmsafe.json", records))
    assert len(ds) == 2 and report.kept == 2 and report.total == 9
    assert report.skipped == {"image_outside_root": 2, "missing_image_file": 1,
                              "undecodable_image": 1, "missing_chosen": 1, "remote_image": 1,
                              "image_placeholder_mismatch": 1}  # fmt: skip
    assert report.examples["image_outside_root"] == [2, 6]
    assert ds["id"] == ["0", "1"] and ds["type"] == ["illegal", "privacy"]
    assert ds["entity_type"] == ["object", "object"] and set(ds["source"]) == {"mmsafe-po"}
    assert ds[0]["prompt"] == MMSAFE["question"]
    assert _color(ds[0]["image"]) == (255, 0, 0) and _color(ds[1]["image"]) == (0, 0, 255)
    assert "images" not in ds.column_names and ds[0]["label"] is None


def test_symlink_leaving_the_root_is_refused(folder):
    os.symlink(folder.parent / "secret.png", folder / "images" / "link.png")
    ds, report = read_mmsafe(_write(folder / "m.json", [MMSAFE, {**MMSAFE, "image":
                                                                 "images/link.png"}]))  # fmt: skip
    assert len(ds) == 1 and report.skipped == {"image_outside_root": 1}


def test_mmsafe_image_root_option_and_inline_bytes(folder, tmp_path):
    uri = "data:image/png;base64," + base64.b64encode(_png((0, 200, 0))).decode()
    records = [{**MMSAFE, "image": "red.png"}, {**MMSAFE, "image": uri},
               {**MMSAFE, "image": "images/red.png"}]  # fmt: skip
    ds, report = read_mmsafe(_write(tmp_path / "elsewhere.json", records),
                             image_root=folder / "images")  # fmt: skip
    assert [_color(im) for im in ds["image"]] == [(255, 0, 0), (0, 200, 0)]
    assert report.skipped == {"missing_image_file": 1}  # images/red.png under images/


def test_strict_raises_at_the_bad_row(folder):
    path = _write(folder / "m.json", [MMSAFE, {**MMSAFE, "image": "../secret.png"}])
    with pytest.raises(ValueError, match="row 1: image_outside_root"):
        read_mmsafe(path, strict=True)


def test_errors_name_the_file_and_field(folder):
    no_chosen = [{k: v for k, v in MMSAFE.items() if k != "chosen"}] * 2
    with pytest.raises(ValueError, match=r"no record has the field 'chosen'"):
        read_mmsafe(_write(folder / "a.json", no_chosen))
    (folder / "bad.json").write_text('[{"question": 1,}]')
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        read_mmsafe(folder / "bad.json")
    lines = json.dumps(MMSAFE) + "\n" + json.dumps({**MMSAFE, "id": "z"}) + "\n"
    (folder / "lines.json").write_text(lines)  # JSON Lines under a .json name
    assert read_mmsafe(folder / "lines.json")[0]["id"] == ["0", "z"]
    (folder / "bad.jsonl").write_text(json.dumps(MMSAFE) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 2 is not valid JSON"):
        read_mmsafe(folder / "bad.jsonl")
    with pytest.raises(ValueError, match="no usable row"):  # every row bad: shows the report
        read_mmsafe(_write(folder / "c.json", [{**MMSAFE, "image": "../secret.png"}]))


def test_realign_accepts_documented_keys(folder):
    records = [
        {"id": 1, "image": "images/red.png", "question": "What color is the shape?",
         "chosen": "red", "rejected": "blue", "image_neg": "images/blue.png"},
        {"img_path": "images/green.png", "y_w": "A green square.", "y_l": "A red square.",
         "conversations": [{"from": "human", "value": "<image>\nDescribe it."},
                           {"from": "gpt", "value": "A green square."}]},
        {"image": "images/red.png", "question": "Color?", "chosen": "red"},  # no rejected
        {"image": "images/red.png", "question": "Color?", "chosen": "red", "rejected": "blue",
         "retrieved_image": "../secret.png"},
    ]  # fmt: skip
    ds, report = read_realign(_write(folder / "realign.json", records))
    assert report.skipped == {"missing_rejected": 1, "image_outside_root": 1}
    assert ds["prompt"] == ["What color is the shape?", "<image>\nDescribe it."]
    assert ds["chosen"] == ["red", "A green square."] and ds["rejected"][1] == "A red square."
    assert _color(ds[0]["retrieved_image"]) == (0, 0, 255) and ds[1]["retrieved_image"] is None
    with pytest.raises(ValueError, match=r"'rejected' \(accepted keys: rejected, y_l"):
        read_realign(_write(folder / "r2.json", [records[2]]))


def test_trl_conversational_multi_image_and_skips(folder):
    user = lambda *parts: [{"role": "user", "content": list(parts)}]  # noqa: E731
    answer = lambda text: [{"role": "assistant", "content": [{"type": "text",  # noqa: E731
                                                               "text": text}]}]  # fmt: skip
    image, text = {"type": "image"}, lambda t: {"type": "text", "text": t}
    records = [
        {"prompt": user(image, image, text("Which is red?")), "chosen": answer("The first."),
         "rejected": answer("The second."), "images": ["images/red.png", "images/blue.png"]},
        {"prompt": user(text("Compare"), image), "chosen": "green", "rejected": "red",
         "images": ["images/green.png"]},
        {"prompt": [{"role": "system", "content": "Be brief."}, *user(image, text("Hi"))],
         "chosen": "hi", "rejected": "no", "images": ["images/red.png"]},
        {"prompt": user(image, text("One slot")), "chosen": "a", "rejected": "b",
         "images": ["images/red.png", "images/blue.png"]},
        {"chosen": [*user(image, text("Implicit?")), *answer("yes")],  # implicit prompt
         "rejected": [*user(image, text("Implicit?")), *answer("no")],
         "images": ["images/blue.png"]},
    ]  # fmt: skip
    ds, report = read_trl(_write(folder / "trl.json", records))
    assert report.skipped == {"multi_turn_prompt": 1, "image_placeholder_mismatch": 1}
    assert ds.features["images"] == List(Image())
    assert ds["prompt"] == ["<image>\n<image>\nWhich is red?", "Compare\n<image>",
                            "<image>\nImplicit?"]  # fmt: skip
    assert ds["chosen"] == ["The first.", "green", "yes"] and ds["rejected"][2] == "no"
    assert [_color(im) for im in ds[0]["images"]] == [(255, 0, 0), (0, 0, 255)]


def test_llava_conversations(folder):
    human = {"from": "human", "value": "<image>\nWhat is shown?"}
    records = [
        {"id": "a", "image": "images/red.png", "conversations": [human],
         "chosen": "A red square.", "rejected": "A blue circle."},
        {"id": "b", "image": "images/green.png", "conversations": [human,
         {"from": "gpt", "value": "A green square."}], "rejected": "A cat."},
        {"id": "c", "image": "images/blue.png", "conversations": [human],
         "output_1": {"from": "llava", "value": "Red."}, "output_2": {"value": "Blue."},
         "preference": 2},
        {"id": "d", "image": "images/blue.png", "conversations": [human, {"from": "gpt",
         "value": "x"}, {"from": "human", "value": "and?"}], "chosen": "y", "rejected": "z"},
        {"id": "e", "image": ["images/red.png", "images/blue.png"], "conversations": [
         {"from": "human", "value": "<image>\n<image>\nSame?"}], "chosen": "No.",
         "rejected": "Yes."},
    ]  # fmt: skip
    ds, report = read_llava(_write(folder / "llava.json", records))
    assert report.skipped == {"multi_turn_prompt": 1} and ds["id"] == ["a", "b", "c", "e"]
    assert ds["chosen"] == ["A red square.", "A green square.", "Blue.", "No."]
    assert ds["rejected"] == ["A blue circle.", "A cat.", "Red.", "Yes."]
    assert [len(x) for x in ds["images"]] == [1, 1, 1, 2]


@pytest.mark.parametrize(
    ("fields", "sample", "expected"),
    [
        (["id", "question", "image", "chosen", "rejected", "type", "entity", "entity_type"],
         None, "mmsafe"),
        (["image", "question", "chosen", "rejected", "image_neg"], None, "realign"),
        (["image", "y_w", "y_l", "question"], None, "realign"),
        (["image", "question", "chosen", "rejected"], None, "realign"),
        (["id", "image", "conversations", "chosen", "rejected"], None, "llava"),
        (["prompt", "chosen", "rejected", "images"], None, "trl"),
        (["prompt", "chosen", "rejected", "image"], {"prompt": [{"role": "user"}]}, "trl"),
        (["prompt", "chosen", "rejected", "image"], {"prompt": "q"}, "trl"),
    ],
)  # fmt: skip
def test_detect_format(fields, sample, expected):
    assert detect_format(fields, sample) == expected


def test_detect_format_names_the_fields():
    assert detect_format(["prompt", "chosen", "rejected", "image"], saved=True) == "pairs"
    with pytest.raises(ValueError, match=r"fields \['caption', 'jpg_0'\]"):
        detect_format(["caption", "jpg_0"])


def test_open_vlm_pairs_detects_each_json_format(folder):
    mmsafe = _write(folder / "a.json", [MMSAFE])
    realign = _write(folder / "b.jsonl", [])
    (folder / "b.jsonl").write_text(json.dumps({"image": "images/red.png", "question": "Q?",
                                                "y_w": "red", "y_l": "blue"}) + "\n")  # fmt: skip
    for path, source in ((mmsafe, "mmsafe-po"), (realign, "re-align")):
        ds, report = open_vlm_pairs(path, "train")
        assert ds["source"] == [source] and report.kept == 1
    with pytest.raises(FileNotFoundError, match=r"missing\.json: no such file"):
        open_vlm_pairs(folder / "missing.json", "train")
    with pytest.raises(ValueError, match="unknown VLM data format 'mmsafe_po'"):
        open_vlm_pairs(mmsafe, "train", format="mmsafe_po")
    # A folder holding one JSON file and its images.
    sub = folder.parent / "release"
    (sub / "images").mkdir(parents=True)
    (sub / "images" / "red.png").write_bytes(_png((255, 0, 0)))
    _write(sub / "train.json", [MMSAFE, MMSAFE])
    ds, report = open_vlm_pairs(sub, "train", max_samples=1)
    assert len(ds) == 1 and report.total == 1


def test_open_vlm_pairs_saved_datasets(tmp_path):
    red, blue = _png((255, 0, 0)), _png((0, 0, 255))
    trl = Dataset.from_dict(
        {"prompt": ["<image><image>Which?", "Which?"], "chosen": ["a", "b"],
         "rejected": ["c", "d"], "images": [[{"bytes": red, "path": None}] * 2,
                                            [{"bytes": b"junk", "path": None}]]},
        features=Features({"prompt": Value("string"), "chosen": Value("string"),
                           "rejected": Value("string"), "images": List(Image())}),
    )  # fmt: skip
    DatasetDict({"train": trl}).save_to_disk(str(tmp_path / "trl"))
    ds, report = open_vlm_pairs(tmp_path / "trl", "train")
    assert len(ds) == 1 and report.skipped == {"undecodable_image": 1}
    with pytest.raises(ValueError, match=r"has splits \['train'\]; asked for split 'test'"):
        open_vlm_pairs(tmp_path / "trl", "test")
    pairs = Dataset.from_dict(
        {"prompt": ["q", "q"], "chosen": ["a", ""], "rejected": ["b", "c"],
         "image": [{"bytes": blue, "path": None}] * 2},
        features=Features({"prompt": Value("string"), "chosen": Value("string"),
                           "rejected": Value("string"), "image": Image()}),
    )  # fmt: skip
    pairs.save_to_disk(str(tmp_path / "pairs"))
    ds, report = open_vlm_pairs(tmp_path / "pairs", "train")
    assert len(ds) == 1 and report.skipped == {"missing_chosen": 1}
    assert _color(ds[0]["image"]) == (0, 0, 255)


def test_open_vlm_pairs_mmsafe_from_a_saved_dataset(tmp_path):
    """MMSafe-PO as a dataset with an Image column (the hub layout), detected by its fields."""
    records = {k: [MMSAFE[k]] * 3 for k in MMSAFE if k != "image"}
    records["image"] = [{"bytes": _png((255, 0, 0)), "path": None}, None,
                        {"bytes": b"junk", "path": None}]  # fmt: skip
    features = Features({**{k: Value("string") for k in records}, "image": Image()})
    Dataset.from_dict(records, features=features).save_to_disk(str(tmp_path / "mmsafe"))
    ds, report = open_vlm_pairs(tmp_path / "mmsafe", "train")
    assert len(ds) == 1 and ds["source"] == ["mmsafe-po"] and ds["entity"] == ["powder"]
    assert report.skipped == {"missing_image": 1, "undecodable_image": 1}


def test_open_vlm_pairs_toy_and_collator(folder):
    """toy:<kind> and reader rows both go through the VLM collator of toy-vlm."""
    from transformers import AutoProcessor

    from mmalign.toy.paths import model_path
    from mmalign.vlm.collate import PairCollator

    ds, report = open_vlm_pairs("toy:hallucination", "train", max_samples=4)
    assert len(ds) == 4 and report.kept == 4 and ds[0]["retrieved_image"] is not None
    collator = PairCollator(AutoProcessor.from_pretrained(model_path("vlm")), ["main", "visual"])
    batch = collator([dict(r) for r in ds])
    assert batch.pairs["visual"][0].shape == (4,)
    with pytest.raises(ValueError, match="format must be 'pairs'"):
        open_vlm_pairs("toy:vqa", "train", format="trl")
    llava = _write(folder / "l.json", [{"image": ["images/red.png", "images/blue.png"],
                                        "conversations": [{"from": "human", "value":
                                                           "<image>\n<image>\nSame?"}],
                                        "chosen": "no", "rejected": "yes"}])  # fmt: skip
    rows, _ = open_vlm_pairs(llava, "train")
    batch = PairCollator(collator.processor)([dict(r) for r in rows])
    assert batch.input_ids.shape[0] == 2 and len(batch.units[0]) == 2
