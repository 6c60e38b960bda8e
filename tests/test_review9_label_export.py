"""`mmalign label export --out DIR` into a folder that already holds files (review 9).

Before: a `pickapic` export over an earlier `pairs` export left the old `state.json` and
arrow shard beside the new parquet, and the loader (`mmalign train data=DIR`) read the old
votes; a `pairs` export over an earlier one replaced it without a word; a `pickapic` export
deleted any `train-*.parquet` in the folder, the user's own included. Now the folder must be
new or empty, an earlier export is replaced only with `--overwrite`, and a folder holding
anything else is refused either way.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mmalign_label.export import export_votes
from mmalign_label.images import import_pairs
from mmalign_label.store import Store
from mmalign_label.testing import make_pairs_dataset

from mmalign.cli import main
from mmalign.config import InputError


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database with 2 votes and a third pair, its images beside it (DB.images)."""
    path = tmp_path / "labels.sqlite"
    store = Store(str(path), overlap=2)
    pairs = list(import_pairs(make_pairs_dataset(tmp_path / "pairs", 3, size=16),
                              str(path) + ".images"))  # fmt: skip
    store.add_pairs(pairs)
    for k, pair in enumerate(pairs[:2]):
        store.record_vote(vote_id=f"vote-{k:05d}", annotator="ann", pair_id=pair.pair_id,
                          choice="left", left_image=0, decide_ms=10)  # fmt: skip
    store.close()
    return path


def _vote_again(db: Path) -> None:
    store = Store(str(db))
    pair = store.next_pair("bob")
    assert pair is not None
    store.record_vote(vote_id="vote-00009", annotator="bob", pair_id=pair.pair_id,
                      choice="right", left_image=1, decide_ms=10)  # fmt: skip
    store.close()


def _export(db: Path, out: Path, fmt: str, *extra: str) -> int:
    return main(["label", "export", "--db", str(db), "--out", str(out), "--format", fmt, *extra])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _rows(out: Path) -> int:
    from mmalign.data.pickapic import _load_raw

    return len(_load_raw(out, "train", streaming=False))  # what `data=DIR` reads


def test_an_earlier_export_is_refused_without_overwrite(db: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert _export(db, out, "pairs") == 0
    before = _snapshot(out)
    _vote_again(db)
    capsys.readouterr()
    for fmt in ("pickapic", "pairs"):  # another format (it was mixed in), or the same one
        assert _export(db, out, fmt) == 2
        err = capsys.readouterr().err
        assert f"--out {out} already holds an export" in err and "--overwrite" in err, err
        assert "state.json" in err
        assert _snapshot(out) == before  # nothing written, nothing removed
    assert _rows(out) == 2


@pytest.mark.parametrize(("first", "second"), [("pairs", "pickapic"), ("pickapic", "pairs"),
                                               ("pairs", "pairs")])  # fmt: skip
def test_overwrite_replaces_the_earlier_export_whole(db, tmp_path, capsys, first, second):
    out = tmp_path / "out"
    assert _export(db, out, first) == 0
    _vote_again(db)
    capsys.readouterr()
    assert _export(db, out, second, "--overwrite") == 0
    assert f"replaced the earlier export in {out}" in capsys.readouterr().err
    names = sorted(os.listdir(out))
    if second == "pickapic":
        assert names == ["train-00000-of-00001.parquet"]  # no saved dataset left beside it
    else:
        assert names == ["data-00000-of-00001.arrow", "dataset_info.json", "state.json"]
    assert _rows(out) == 3  # the new export's rows, not the old ones


def test_a_folder_holding_other_files_is_refused_even_with_overwrite(db, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "train-00000-of-00001.parquet").write_bytes(b"my own shards")
    before = _snapshot(out)
    for extra in ((), ("--overwrite",)):
        assert _export(db, out, "pickapic", *extra) == 2
        err = capsys.readouterr().err
        assert f"--out {out} holds files that are not an export (notes.txt)" in err, err
        assert "new or empty folder" in err
        assert _snapshot(out) == before  # the user's files are where they were


def test_a_new_or_empty_folder_takes_the_export_and_a_file_is_refused(db, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _export(db, empty, "pickapic") == 0 and _rows(empty) == 2
    assert _export(db, tmp_path / "a" / "b", "pairs") == 0 and _rows(tmp_path / "a" / "b") == 2
    capsys.readouterr()
    assert _export(db, db, "pairs") == 2
    assert f"--out {db} is a file" in capsys.readouterr().err


def test_a_failed_export_leaves_the_earlier_one_as_it_was(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    store = Store(str(db))
    images = Path(str(db) + ".images")
    export_votes(store, images, out, "pairs")
    before = _snapshot(out)
    next(images.iterdir()).unlink()  # an image the export cannot read
    with pytest.raises(Exception, match="image"):
        export_votes(store, images, out, "pickapic")
    assert _snapshot(out) == before and _rows(out) == 2  # no working folder left either
    with pytest.raises(Exception, match="image"):
        export_votes(store, images, tmp_path / "new", "pairs")
    assert not (tmp_path / "new").exists()  # a folder made for a failed export is removed
    store.close()


def test_the_python_api_replaces_an_earlier_export_unless_told_not_to(db, tmp_path) -> None:
    out = tmp_path / "out"
    store = Store(str(db))
    images = Path(str(db) + ".images")
    assert export_votes(store, images, out, "pairs")["out"] == str(out)
    summary = export_votes(store, images, out, "pickapic")  # the default: replace
    assert summary["out"] == str(out) and summary["rows"] == 2
    assert sorted(os.listdir(out)) == ["train-00000-of-00001.parquet"]
    with pytest.raises(InputError, match="already holds an export"):
        export_votes(store, images, out, "pairs", overwrite=False)
    (out / ".mmalign-export-x1y2").mkdir()  # left by an export that was killed
    with pytest.raises(InputError, match=r"\.mmalign-export-x1y2"):
        export_votes(store, images, out, "pairs", overwrite=False)
    export_votes(store, images, out, "pairs")
    assert sorted(os.listdir(out)) == ["data-00000-of-00001.arrow", "dataset_info.json",
                                       "state.json"]  # fmt: skip
    store.close()
