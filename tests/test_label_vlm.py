"""VLM response pairs in the labeling app (issue 18 item 4): import, votes, gold, export to
PreferencePair rows and TRL's VLM DPO format, and `mmalign train ... data=<export>`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from mmalign_label.export import export_votes
from mmalign_label.gold import add_gold, gold_answers
from mmalign_label.labeling import Labeling
from mmalign_label.store import Store
from mmalign_label.vlm_pairs import (
    VlmDataError,
    add_vlm_pairs,
    is_vlm,
    read_vlm_pairs,
    responses_of,
)
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _png(path: Path, color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path.name


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _rows(tmp_path: Path, n: int) -> list[dict]:
    return [{"prompt": f"What colour is the square? ({i})",
             "image": _png(tmp_path / f"im{i}.png", (20 * i, 0, 200)),
             "response_0": f"Blue, {i}.", "response_1": f"Red, {i}."}
            for i in range(n)]  # fmt: skip


def test_bad_vlm_rows_name_the_row_and_nothing_is_imported(tmp_path: Path) -> None:
    rows = _rows(tmp_path, 4)
    cases = [
        ({**rows[1], "image": ""}, r"row 1: no image"),
        ({k: v for k, v in rows[1].items() if k != "image"}, r"row 1: no image"),
        ({**rows[1], "response_1": "  "}, r"row 1: response_1 is empty"),
        ({**rows[1], "image": "missing.png"}, r"row 1: image 'missing.png' is not a file"),
        ({**rows[1], "image": "../escape.png"}, r"row 1: image '../escape.png' is not a file"),
    ]
    store = Store(tmp_path / "l.sqlite")
    for bad, match in cases:
        data = _jsonl(tmp_path / "vlm.jsonl", [rows[0], bad, rows[2]])
        with pytest.raises(VlmDataError, match=match):
            add_vlm_pairs(store, read_vlm_pairs(data, tmp_path / "img"))
        assert store.count_pairs() == 0 and not is_vlm(store)
    # any VLM data mmalign reads: a bad row of a TRL-style file names its row too
    trl = _jsonl(tmp_path / "trl.jsonl", [{"prompt": "q", "images": [], "chosen": "a",
                                           "rejected": "b"}])  # fmt: skip
    with pytest.raises(VlmDataError, match="row 0: no image"):
        read_vlm_pairs(trl, tmp_path / "img")


def test_vlm_votes_gold_and_both_exports_load_as_vlm_preference_data(
    tmp_path: Path, label_db: str
) -> None:
    from mmalign.vlm.data import open_vlm_pairs

    root = tmp_path / "img"
    store = Store(label_db, gold_rate=0.0)
    rows = _rows(tmp_path, 6)
    assert add_vlm_pairs(store, read_vlm_pairs(_jsonl(tmp_path / "v.jsonl", rows), root)) == 6
    assert is_vlm(store) and store.count_pairs() == 6
    gold_row = {**_rows(tmp_path, 7)[6], "answer": "response_0"}
    assert add_gold(store, _jsonl(tmp_path / "gold.jsonl", [gold_row]), root)["new_pairs"] == 1
    with pytest.raises(Exception, match="answer 'image_0' names no side"):
        add_gold(store, _jsonl(tmp_path / "g2.jsonl", [{**gold_row, "answer": "image_0"}]), root)
    gold_id = next(iter(gold_answers(store)))

    lab = Labeling(store, seed=3)
    cast = {}
    choices = iter(["left", "right", "tie", "both_bad", "skip", "left"])
    while nxt := lab.next_for("ann"):
        if nxt["pair_id"] == gold_id:
            break
        choice = next(choices)
        lab.vote("ann", vote_id=uuid.uuid4().hex, pair_id=nxt["pair_id"], choice=choice,
                 left_image=nxt["left_image"], decide_ms=900)  # fmt: skip
        cast[nxt["pair_id"]] = (choice, nxt["left_image"])
    # the gold pair is not served at rate 0: vote on it directly, it must not be exported
    lab.vote("ann", vote_id=uuid.uuid4().hex, pair_id=gold_id, choice="left", left_image=0,
             decide_ms=900)  # fmt: skip

    summary = export_votes(store, root, tmp_path / "pairs", "pairs")
    assert summary["rows"] == 4 and summary["skipped"] == {"both_bad": 1, "skip": 1, "gold": 1}
    ds, report = open_vlm_pairs(tmp_path / "pairs")
    assert report.kept == 4 and report.num_skipped == 0
    for row in ds:
        pair_id = next(p for p, (c, _) in cast.items() if row["prompt"] == store.get_pair(p).prompt)
        choice, left = cast[pair_id]
        texts = responses_of(store, pair_id)
        shown = (texts[left], texts[1 - left])
        assert (row["chosen"], row["rejected"]) == (shown[::-1] if choice == "right" else shown)
        assert row["label"] == (0.5 if choice == "tie" else 1.0)
        assert row["image"].size == (16, 16)
    summary = export_votes(store, root, tmp_path / "trl", "trl")
    assert summary["rows"] == 4
    from datasets import load_from_disk

    trl = load_from_disk(str(tmp_path / "trl"))
    assert {"images", "prompt", "chosen", "rejected"} <= set(trl.column_names)
    first = trl[0]
    assert first["prompt"][0]["role"] == "user" and first["chosen"][0]["role"] == "assistant"
    assert [p["type"] for p in first["prompt"][0]["content"]] == ["image", "text"]
    ds, report = open_vlm_pairs(tmp_path / "trl")
    assert report.kept == 4 and ds[0]["image"].size == (16, 16)
    assert ds[0]["prompt"].startswith("<image>")  # where TRL's image part was
    with pytest.raises(ValueError, match="'pairs' or 'trl'"):
        export_votes(store, root, tmp_path / "x", "pickapic")


def test_toy_vlm_data_imports_and_its_export_trains(tmp_path: Path) -> None:
    root = tmp_path / "img"
    store = Store(tmp_path / "l.sqlite")
    assert add_vlm_pairs(store, read_vlm_pairs("toy:hallucination", root, limit=24)) == 24
    lab = Labeling(store, seed=0)
    i = 0
    while nxt := lab.next_for("ann"):
        lab.vote("ann", vote_id=uuid.uuid4().hex, pair_id=nxt["pair_id"],
                 choice=("left", "right", "tie")[i % 3], left_image=nxt["left_image"],
                 decide_ms=500)  # fmt: skip
        i += 1
    out = tmp_path / "export"
    assert export_votes(store, root, out, "trl")["rows"] == 24
    cmd = [sys.executable, "-m", "mmalign.cli", "train", "configs/toy/vlm_dpo.yaml",
           f"data={out}", "train.max_steps=2", "train.batch_size=4",
           f"output_dir={tmp_path / 'run'}"]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained 2 steps" in done.stdout + done.stderr
    assert (tmp_path / "run" / "adapter").is_dir()


def test_data_override_naming_a_folder_is_the_data_path(tmp_path: Path) -> None:
    from mmalign.data.cards import expand_data

    assert expand_data(str(tmp_path)) == {"path": str(tmp_path), "split": "train"}
    assert expand_data({"path": "x"}) == {"path": "x"}


def test_model_samples_two_different_responses_per_row(tmp_path: Path) -> None:
    """--vlm --model: two sampled responses per prompt + image row, stored as the pair; a
    model that answers alike is refused naming the row (the toy VLM at temperature 1)."""
    from mmalign_label.vlm_generate import ResponseSampler, generate_vlm_pairs

    rows = [{k: v for k, v in r.items() if k in ("prompt", "image")} for r in _rows(tmp_path, 3)]
    data = _jsonl(tmp_path / "prompts.jsonl", rows)
    store = Store(tmp_path / "l.sqlite")
    with pytest.raises(VlmDataError, match=r"row 0: toy:vlm gave the same \(or an empty\) "
                       r"response 2 times"):  # fmt: skip
        generate_vlm_pairs(ResponseSampler("toy:vlm", temperature=1.0, tries=2,
                                           max_new_tokens=8), data, tmp_path / "img")  # fmt: skip
    bad = _jsonl(tmp_path / "bad.jsonl", [rows[0], {"prompt": "q"}])
    with pytest.raises(VlmDataError, match="row 1: no image"):  # checked before sampling
        generate_vlm_pairs(ResponseSampler("toy:vlm"), bad, tmp_path / "img")
    # a high temperature makes the toy's two samples differ (the mechanism, not good text)
    sampler = ResponseSampler("toy:vlm", temperature=5.0, max_new_tokens=8, seed=1)
    pairs = generate_vlm_pairs(sampler, data, tmp_path / "img")
    assert len(pairs) == 3 and all(p.response_0 != p.response_1 for p in pairs)
    assert all(p.source == "model:toy:vlm:T=5.0" for p in pairs)
    assert add_vlm_pairs(store, pairs) == 3
    again = generate_vlm_pairs(sampler, data, tmp_path / "img")  # same seeds: same responses
    assert [(p.response_0, p.response_1) for p in again] == [
        (p.response_0, p.response_1) for p in pairs
    ]
