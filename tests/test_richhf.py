"""RichHF-18K's TFRecord format read without TensorFlow (mmalign/data/tfrecord.py, richhf.py).

The tiny file is written in the release's exact layout: TFRecord framing with masked CRC-32C,
each record a tf.train.Example serialized by the protobuf library itself (the message types
built from example.proto/feature.proto's definitions), PNG heatmaps of 0..255.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from mmalign.config import InputError
from mmalign.data.dense import DENSE_SCORES, DenseRow
from mmalign.data.richhf import RichHFRows, prompt_words, read_records_richhf
from mmalign.data.tfrecord import (
    TFRecordError,
    crc32c,
    encode_example,
    parse_example,
    read_records,
    write_records,
)


def _example_class():
    """tf.train.Example as protobuf message classes, from TensorFlow's .proto definitions."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FileDescriptorProto(name="mm_example.proto", package="mmtf", syntax="proto3")
    T = descriptor_pb2.FieldDescriptorProto
    for name, kind in (("BytesList", T.TYPE_BYTES), ("FloatList", T.TYPE_FLOAT),
                       ("Int64List", T.TYPE_INT64)):  # fmt: skip
        m = f.message_type.add(name=name)
        m.field.add(name="value", number=1, type=kind, label=T.LABEL_REPEATED)
    feat = f.message_type.add(name="Feature")
    feat.oneof_decl.add(name="kind")
    for i, name in enumerate(("bytes_list", "float_list", "int64_list")):
        tname = ".mmtf." + ("BytesList", "FloatList", "Int64List")[i]
        feat.field.add(name=name, number=i + 1, type=T.TYPE_MESSAGE, type_name=tname,
                       label=T.LABEL_OPTIONAL, oneof_index=0)  # fmt: skip
    feats = f.message_type.add(name="Features")
    entry = feats.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=T.TYPE_MESSAGE, type_name=".mmtf.Feature",
                    label=T.LABEL_OPTIONAL)  # fmt: skip
    feats.field.add(name="feature", number=1, type=T.TYPE_MESSAGE, label=T.LABEL_REPEATED,
                    type_name=".mmtf.Features.FeatureEntry")  # fmt: skip
    ex = f.message_type.add(name="Example")
    ex.field.add(name="features", number=1, type=T.TYPE_MESSAGE, type_name=".mmtf.Features",
                 label=T.LABEL_OPTIONAL)  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("mmtf.Example"))


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _record(Example, filename: str, scores: dict[str, float], size: int = 8, **skip) -> bytes:
    ex = Example()
    feature = ex.features.feature
    feature["filename"].bytes_list.value.append(filename.encode())
    for key, value in scores.items():
        feature[key].float_list.value.append(value)
    art = np.zeros((size, size))
    art[2:4, 1:5] = 255
    mis = np.zeros((size, size))
    mis[0, 0] = 128
    feature["artifact_map"].bytes_list.value.append(_png(art))
    feature["misalignment_map"].bytes_list.value.append(_png(mis))
    feature["prompt_misalignment_label"].bytes_list.value.append(b"1 1 0 1")
    for key in skip:
        del feature[key]
    return ex.SerializeToString()


GOOD = {"aesthetics_score": 0.5, "artifact_score": 0.75, "misalignment_score": 0.25,
        "overall_score": 1.0}  # fmt: skip


@pytest.fixture
def richhf(tmp_path):
    Example = _example_class()
    records = [
        _record(Example, "aaa.png", GOOD),
        _record(Example, "bbb.png", {**GOOD, "overall_score": 1.5}),  # out of range
        _record(Example, "ccc.png", GOOD, artifact_map=True),  # missing map
        _record(Example, "ddd.png", GOOD),  # image of another aspect ratio
        _record(Example, "eee.png", GOOD),  # no image on disk
    ]
    write_records(tmp_path / "dev.tfrecord", records)
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(images / "aaa.png")
    (images / "aaa.txt").write_text("a red, square box.\n")  # 4 words for the 4 labels
    Image.new("RGB", (16, 12)).save(images / "ddd.png")
    (images / "ddd.txt").write_text("x")
    return tmp_path, images


def test_crc32c_and_framing(tmp_path):
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    path = write_records(tmp_path / "x.tfrecord", [b"abc", b""])
    assert list(read_records(path)) == [b"abc", b""]
    raw = bytearray(path.read_bytes())
    raw[13] ^= 1  # flip a data bit of record 0
    (tmp_path / "bad.tfrecord").write_bytes(bytes(raw))
    with pytest.raises(TFRecordError, match="record 0 at byte 0: bad data checksum"):
        list(read_records(tmp_path / "bad.tfrecord"))
    (tmp_path / "cut.tfrecord").write_bytes(path.read_bytes()[:-3])
    with pytest.raises(TFRecordError, match=r"record 1 .* truncated"):
        list(read_records(tmp_path / "cut.tfrecord"))


def test_parse_example_matches_protobuf_serializer():
    Example = _example_class()
    ex = Example()
    ex.features.feature["b"].bytes_list.value.extend([b"x", b"yz"])
    ex.features.feature["f"].float_list.value.extend([0.5, -2.0])
    ex.features.feature["i"].int64_list.value.extend([3, -7, 1 << 40])
    parsed = parse_example(ex.SerializeToString())
    assert parsed == {"b": [b"x", b"yz"], "f": [0.5, -2.0], "i": [3, -7, 1 << 40]}
    # and our encoder writes what protobuf reads back
    ours = encode_example({"b": [b"x", b"yz"], "f": [0.5, -2.0], "i": [3, -7, 1 << 40]})
    back = Example.FromString(ours)
    assert list(back.features.feature["i"].int64_list.value) == [3, -7, 1 << 40]
    assert list(back.features.feature["f"].float_list.value) == [0.5, -2.0]

    # unpacked floats (one fixed32 field per value) parse too
    def ld(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    float_list = b"\x0d" + struct.pack("<f", 1.25) + b"\x0d" + struct.pack("<f", 2.0)
    entry = ld(1, b"f") + ld(2, ld(2, float_list))
    assert parse_example(ld(1, ld(1, entry))) == {"f": [1.25, 2.0]}


def test_richhf_reader_on_tiny_file(richhf):
    root, images = richhf
    records, report = read_records_richhf(root, "dev")
    assert [r.filename for r in records] == ["aaa.png", "ddd.png", "eee.png"]
    assert report.skipped == {"overall_out_of_range": 1, "missing_artifact_map": 1}
    # kept records are named by their row in the file, as skipped ones are (review 8)
    assert [report.source_row(i) for i in range(len(records))] == [0, 3, 4]
    assert records[0].token_labels == [1, 1, 0, 1]
    assert records[0].scores == {"alignment": 0.25, "aesthetics": 0.5, "plausibility": 0.75,
                                 "overall": 1.0}  # fmt: skip

    rows = RichHFRows(root, "dev", images=images)
    assert len(rows) == 1
    assert rows.report.kept == 1 and rows.report.total == 5
    assert rows.report.skipped == {"overall_out_of_range": 1, "missing_artifact_map": 1,
                                   "heatmap_size_mismatch": 1, "image_not_found": 1}  # fmt: skip
    row = rows[0]
    assert row.prompt == "a red, square box." and row.name == "aaa.png"
    assert row.token_labels == [1, 1, 0, 1]
    assert "token_labels" in rows.column_names
    assert row.image.size == (8, 8)  # resized to the heatmaps' grid
    assert row.heatmaps.shape == (2, 8, 8) and row.heatmaps.dtype == np.float32
    assert row.heatmaps[1].sum() == 8.0  # artifact: the 2 x 4 block of 255
    assert row.heatmaps[0, 0, 0] == pytest.approx(128 / 255)  # misalignment channel first
    assert set(row.scores) == set(DENSE_SCORES)


def test_richhf_strict_names_record_and_key(richhf):
    root, _ = richhf
    with pytest.raises(ValueError, match="row 1: overall_out_of_range"):
        read_records_richhf(root / "dev.tfrecord", strict=True)
    with pytest.raises(InputError, match="name a split"):
        read_records_richhf(root)
    with pytest.raises(InputError, match="holds no images"):
        RichHFRows(root, "dev")


def test_data_show_reads_the_richhf_card(richhf, monkeypatch, capsys):
    from mmalign.cli import main

    root, _ = richhf
    monkeypatch.setenv("MMALIGN_RICHHF", str(root))
    assert main(["data", "show", "richhf_18k", "--split", "dev", "--sample", "5"]) == 0
    out = capsys.readouterr().out
    assert "reader: richhf" in out and "sample: 1 row," in out
    assert "image_not_found: 1" in out and "overall_out_of_range: 1" in out


def _truncated_png(data: bytes) -> bytes:
    """`data` cut in the middle of its IDAT chunk: the header still opens, decoding fails."""
    at = data.index(b"IDAT")
    size = int.from_bytes(data[at - 4 : at], "big")
    return data[: at + 4 + size // 2]


@pytest.fixture
def richhf_bad(tmp_path):
    """A tiny file with one good record and one of each kind of bad record, by index:
    1 truncated heatmap PNG, 2 valid framing but not a tf.train.Example, 3 an image that is not
    an image, 4 a caption that is not UTF-8, 5 a caption with 2 words for 4 labels, 6 an image
    whose header opens but whose pixels are truncated (kept when opened, fails on access)."""
    Example = _example_class()
    cut = Example.FromString(_record(Example, "hhh.png", GOOD))
    maps = cut.features.feature["artifact_map"].bytes_list.value
    maps[0] = _truncated_png(maps[0])
    records = [
        _record(Example, "aaa.png", GOOD),
        cut.SerializeToString(),
        b"\x09abc",  # field 1, wire type 1 (fixed64) with 3 of its 8 bytes
        _record(Example, "bbb.png", GOOD),
        _record(Example, "ccc.png", GOOD),
        _record(Example, "ddd.png", GOOD),
        _record(Example, "eee.png", GOOD),
    ]
    write_records(tmp_path / "dev.tfrecord", records)
    images = tmp_path / "images"
    images.mkdir()
    for stem in ("aaa", "ccc", "ddd"):
        Image.new("RGB", (16, 16), (200, 10, 10)).save(images / f"{stem}.png")
    (images / "aaa.txt").write_text("a red square box")
    (images / "bbb.png").write_bytes(b"this is not an image")
    (images / "bbb.txt").write_text("a red square box")
    (images / "ccc.txt").write_bytes(b"a r\xe9d square box")  # Latin-1, not UTF-8
    (images / "ddd.txt").write_text("red square")
    noise = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    (images / "eee.png").write_bytes(_truncated_png(buf.getvalue()))
    (images / "eee.txt").write_text("a red square box")
    return tmp_path, images


def test_richhf_bad_records_are_counted_not_fatal(richhf_bad):
    root, images = richhf_bad
    records, report = read_records_richhf(root, "dev")
    assert [r.index for r in records] == [0, 3, 4, 5, 6]
    assert report.skipped == {"bad_heatmap": 1, "bad_example": 1}
    assert report.examples == {"bad_heatmap": [1], "bad_example": [2]}
    assert report.total == 7 and report.kept == 5

    rows = RichHFRows(root, "dev", images=images)
    assert rows.report.total == 7 and rows.report.kept == 2 and len(rows) == 2
    assert rows.report.skipped == {"bad_heatmap": 1, "bad_example": 1, "bad_image": 1,
                                   "bad_prompt": 1, "token_label_mismatch": 1}  # fmt: skip
    assert rows.report.examples["bad_image"] == [3]
    assert rows.report.examples["bad_prompt"] == [4]
    assert rows.report.examples["token_label_mismatch"] == [5]
    assert "bad_example: 1 (rows 2)" in str(rows.report)
    assert rows[0].name == "aaa.png" and rows[0].token_labels == [1, 1, 0, 1]
    # the truncated image's header opened; its pixels fail on access, naming the record
    with pytest.raises(InputError, match=r"record 6 \(eee.png\): image .*eee.png does not decode"):
        rows[1]


def test_richhf_bad_records_strict_name_file_record_and_reason(richhf_bad):
    root, images = richhf_bad
    with pytest.raises(InputError, match=r"dev.tfrecord: row 1: bad_heatmap"):
        read_records_richhf(root, "dev", strict=True)
    # records 0, 2, 3 alone: a good one, the one that is not an Example, the bad image's
    kept = [r for i, r in enumerate(read_records(root / "dev.tfrecord")) if i in (0, 2, 3)]
    write_records(root / "two.tfrecord", kept)
    with pytest.raises(InputError, match=r"two.tfrecord: row 1: bad_example \(truncated fixed"):
        read_records_richhf(root / "two.tfrecord", strict=True)
    write_records(root / "img.tfrecord", [kept[0], kept[2]])
    with pytest.raises(InputError, match=r"record 1 \(bbb.png\): bad_image"):
        RichHFRows(root / "img.tfrecord", images=images, strict=True)


def test_prompt_words_follow_the_release_and_toy_rows_have_no_labels():
    # the release's own example: 10 labels for these 10 words
    words = prompt_words("RichHF-18K: a dataset for rich human feedback on generative images.")
    assert words[:2] == ["RichHF-18K", "a"] and len(words) == 10
    assert prompt_words('a "red",square;  cat?!') == ["a", "red", "square", "cat"]
    row = DenseRow(prompt="p", image=Image.new("RGB", (2, 2)), heatmaps=np.zeros((2, 2, 2)),
                   scores=dict.fromkeys(DENSE_SCORES, 0.5))  # fmt: skip
    assert row.token_labels is None


def test_toy_dense_rows_name_a_bad_row():
    """The toy `flaws` dense rows (DatasetDenseRows): a score out of range or a heatmap of the
    wrong size is an error naming the row and what is wrong."""
    from datasets import Dataset
    from PIL import Image

    from mmalign.data.dense import DatasetDenseRows

    good = {"prompt": "a red circle", "image": Image.new("RGB", (8, 8)),
            "heatmaps": np.zeros((2, 8, 8), np.float32).tolist(),
            "alignment": 1.0, "aesthetics": 0.5, "plausibility": 0.5, "overall": 0.7}  # fmt: skip
    with pytest.raises(ValueError, match=r"mine: row 1: plausibility_out_of_range"):
        DatasetDenseRows(Dataset.from_list([good, {**good, "plausibility": 1.2}]), "mine")
    small = {**good, "heatmaps": np.zeros((2, 4, 4), np.float32).tolist()}
    rows = DatasetDenseRows(Dataset.from_list([good, small]), "mine")
    assert rows[0].scores["overall"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match=r"mine: row 1: heatmap"):
        rows[1]
