"""A gold file that names one pair twice (review 2, defect 5): with two different answers
the import stops, naming the pair and both lines, and adds nothing; with the same answer the
pair is added once and the repeat is counted in the summary. Before, the last answer won
without a word."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mmalign_label.gold import GoldError, add_gold, gold_answers
from mmalign_label.images import import_pairs
from mmalign_label.store import Store
from mmalign_label.tables import pairs
from mmalign_label.testing import make_pairs_dataset

from mmalign.data.schema import load_pairs, write_pairs


def _store(tmp_path: Path) -> tuple[Store, Path, list[str]]:
    root = tmp_path / "img"
    store = Store(tmp_path / "labels.sqlite")
    store.add_pairs(import_pairs(make_pairs_dataset(tmp_path / "pairs", 3, size=16), root))
    with store.read.begin() as conn:
        ids = list(conn.execute(pairs.select().order_by(pairs.c.seq)))
    return store, root, [p.pair_id for p in ids]


def _lines(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_one_pair_with_two_answers_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    store, root, ids = _store(tmp_path)
    gold = _lines(tmp_path / "gold.jsonl", [
        {"pair_id": ids[0], "answer": "image_0"},
        "",  # a blank line: the numbers are the file's lines, not rows
        {"pair_id": ids[1], "answer": "tie"},
        {"pair_id": ids[0], "answer": "image_1"},
    ])  # fmt: skip
    with pytest.raises(GoldError) as err:
        add_gold(store, gold, root)
    message = str(err.value)
    assert ids[0] in message and "line 1" in message and "line 4" in message, message
    assert "image_0" in message and "image_1" in message, message
    assert gold_answers(store) == {}  # nothing of the file was added


def test_a_pair_named_by_id_and_by_its_images_is_the_same_pair(tmp_path: Path) -> None:
    store, root, _ = _store(tmp_path)
    row = load_pairs(make_pairs_dataset(tmp_path / "g", 1, size=16, seed=5))[0]
    for name in ("chosen", "rejected"):
        row[name].save(tmp_path / f"{name}.png")
    by_images = {"prompt": "p", "image_0": "chosen.png", "image_1": "rejected.png"}
    first = _lines(tmp_path / "first.jsonl", [{**by_images, "answer": "tie"}])
    add_gold(store, first, root)
    (pair_id,) = gold_answers(store)
    gold = _lines(
        tmp_path / "gold.jsonl",
        [{**by_images, "answer": "image_0"}, {"pair_id": pair_id, "answer": "both_bad"}],
    )
    with pytest.raises(GoldError, match=rf"{pair_id}.*line 1.*line 2|{pair_id}.*line 2.*line 1"):
        add_gold(store, gold, root)
    assert gold_answers(store) == {pair_id: "tie"}  # unchanged


def test_a_repeat_with_the_same_answer_is_added_once_and_counted(tmp_path: Path, capsys) -> None:
    store, root, ids = _store(tmp_path)
    gold = _lines(tmp_path / "gold.jsonl", [
        {"pair_id": ids[0], "answer": "image_1"},
        {"pair_id": ids[1], "answer": "tie"},
        {"pair_id": ids[0], "answer": "image_1"},
    ])  # fmt: skip
    summary = add_gold(store, gold, root)
    assert summary["duplicates"] == 1 and summary["gold_pairs"] == 2
    assert gold_answers(store) == {ids[0]: "image_1", ids[1]: "tie"}
    from mmalign.cli import main

    assert main(["label", "gold", "add", str(gold), "--db", str(tmp_path / "labels.sqlite"),
                 "--images", str(root)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "1 row repeats a pair" in out, out


def test_a_json_list_and_a_dataset_folder_name_their_rows(tmp_path: Path) -> None:
    store, root, ids = _store(tmp_path)
    items = [{"pair_id": ids[2], "answer": "image_0"}, {"pair_id": ids[2], "answer": "tie"}]
    (tmp_path / "gold.json").write_text(json.dumps(items))
    with pytest.raises(GoldError, match=rf"{ids[2]}.*row 0.*row 1|{ids[2]}.*row 1.*row 0"):
        add_gold(store, tmp_path / "gold.json", root)
    rows = [dict(r) for r in load_pairs(make_pairs_dataset(tmp_path / "src", 2, size=16))]
    rows = [rows[0], rows[1], {**rows[0], "label": 0.0}]  # row 2: row 0's pair, the other way
    write_pairs(rows, tmp_path / "folder", "image")
    with pytest.raises(GoldError, match=r"row 0.*row 2|row 2.*row 0"):
        add_gold(store, tmp_path / "folder", root)
    assert gold_answers(store) == {}
