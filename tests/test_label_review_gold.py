"""Gold pairs from a dataset folder take their answer from each row's `label` (review)."""

from __future__ import annotations

from pathlib import Path

from mmalign_label.gold import add_gold, gold_answers
from mmalign_label.quality import team_quality
from mmalign_label.store import Store
from mmalign_label.testing import make_pairs_dataset

from mmalign.data.schema import load_pairs, write_pairs


def test_gold_folder_rows_with_label_0_or_a_tie_are_not_gold_for_chosen(tmp_path: Path) -> None:
    # label is P(chosen preferred): 0 says the rejected image won, 0.5 is a tie (the app's
    # own `pairs` export and Pick-a-Pic's 0.5/0.5 rows), None means 1
    rows = [dict(r) for r in load_pairs(make_pairs_dataset(tmp_path / "src", 4, size=16))]
    labels = [1.0, 0.0, 0.5, None]
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        row["prompt"], row["label"] = f"prompt {i}", label
    write_pairs(rows, tmp_path / "gold", "image")
    store = Store(tmp_path / "labels.sqlite")
    add_gold(store, tmp_path / "gold", tmp_path / "img")
    by_prompt = {}
    for pair_id, answer in gold_answers(store).items():
        pair = store.get_pair(pair_id)
        assert pair is not None
        by_prompt[pair.prompt] = answer
    assert by_prompt == {"prompt 0": "image_0", "prompt 1": "image_1", "prompt 2": "tie",
                         "prompt 3": "image_0"}  # fmt: skip

    # an annotator who prefers the image that won (shown on either side) is right every time
    for i, (pair_id, answer) in enumerate(sorted(gold_answers(store).items())):
        left = i % 2
        choice = "tie" if answer == "tie" else ("left" if answer == f"image_{left}" else "right")
        store.record_vote(vote_id=f"vote{i:05d}", annotator="ann", pair_id=pair_id,
                          choice=choice, left_image=left, decide_ms=900)  # fmt: skip
    (row,) = team_quality(store)["annotators"]
    assert row["gold_votes"] == 4 and row["gold_accuracy"] == 1.0
