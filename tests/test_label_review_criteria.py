"""Votes cast under one question are not exported as answers to another (review)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from mmalign_label.criteria import CriteriaError, parse_criteria, save_criteria, stored_criteria
from mmalign_label.export import export_votes
from mmalign_label.images import import_pairs
from mmalign_label.labeling import Labeling
from mmalign_label.store import Store
from mmalign_label.testing import make_pairs_dataset


def _criteria(*names: str):
    return parse_criteria({"criteria": [{"name": n, "question": f"{n}?"} for n in names],
                           "label": "overall"})  # fmt: skip


def test_a_new_first_question_after_one_question_votes_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "labels.sqlite", gold_rate=0.0)
    store.add_pairs(import_pairs(make_pairs_dataset(tmp_path / "p", 3, size=16), tmp_path / "i"))
    lab = Labeling(store)  # the default run: one question, `overall`; no answers rows
    for _ in range(2):
        nxt = lab.next_for("ann")
        lab.vote("ann", vote_id=uuid.uuid4().hex, pair_id=nxt["pair_id"], choice="left",
                 left_image=nxt["left_image"], decide_ms=800)  # fmt: skip
    # these votes answered `overall`: read as answers to `alignment`, they were exported
    # under that criterion while `overall` lost them all as no_answer
    with pytest.raises(CriteriaError, match="already has votes"):
        save_criteria(store, _criteria("alignment", "overall"))
    summary = export_votes(store, tmp_path / "i", tmp_path / "out", "pairs")
    assert summary["rows"] == 2 and summary["skipped"] == {}

    # the same first question (more questions after it) keeps the votes' meaning
    save_criteria(store, _criteria("overall", "alignment"))
    assert stored_criteria(store).names == ("overall", "alignment")
    summary = export_votes(store, tmp_path / "i", tmp_path / "out2", "pairs")
    assert summary["rows"] == 2 and summary["criterion"] == "overall"
    summary = export_votes(store, tmp_path / "i", tmp_path / "out3", "pairs",
                           criterion="alignment")  # fmt: skip
    assert summary["rows"] == 0 and summary["skipped"] == {"no_answer": 2}
