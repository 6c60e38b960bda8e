"""Gold pairs: pairs with a known answer, added by an admin (`mmalign label gold add FILE`).

They are mixed into every annotator's queue (`goldmix.py`), shown like any other pair, never
exported as data, and measure each annotator (`quality.py`). A gold file is JSON Lines
(or a JSON list), one object per pair, in one of three shapes:

    {"pair_id": "3f2a...", "answer": "image_1"}                       # a pair already imported
    {"prompt": "a red circle", "image_0": "a.png", "image_1": "b.png", "answer": "image_0"}
    {"prompt": "What is shown?", "image": "x.png", "response_0": "A cat.",
     "response_1": "A dog.", "answer": "response_0"}                  # VLM response pairs

Image paths are relative to the file's folder. `answer` names a side of the pair
(`image_0`/`image_1`, or `response_0`/`response_1` in VLM mode), `tie` or `both_bad`.
A PreferencePair folder (or Pick-a-Pic data) works too: each row is a gold pair whose answer
is `chosen`, or `rejected` for a row with a label under 0.5, or `tie` for a label of 0.5.
Every row is checked before anything is written, and the pairs and their answers go into
the database in one transaction: a bad row stops the import with its number and reason,
and nothing of the file is added. A pair named by two rows (by id, by its images or
responses, or one of each) with two different answers is such a bad row: the error names
the pair and both rows (lines of a JSON Lines file), as no one can tell which answer was
meant. Rows repeating a pair with the same answer add it once and are counted in the
summary (`duplicates`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mmalign.suggest import did_you_mean

from .images import import_labeled_pairs, save_image
from .store import Pair, Store, pair_id_for
from .tables import gold, pairs
from .vlm_pairs import VlmPair, insert_pairs, is_vlm, vlm_pair

SIDES = {"image_0": "image_0", "image_1": "image_1", "response_0": "image_0",
         "response_1": "image_1", "tie": "tie", "both_bad": "both_bad"}  # fmt: skip
ROW_KEYS = ("pair_id", "prompt", "image_0", "image_1", "image", "response_0", "response_1",
            "answer")  # fmt: skip


class GoldError(ValueError):
    """A gold file row that cannot be imported (its number and the reason in the message)."""


def gold_answers(store: Store) -> dict[str, str]:
    """pair id -> answer (`image_0`, `image_1`, `tie`, `both_bad`) of every gold pair."""
    with store.read.begin() as conn:
        return {r.pair_id: r.answer for r in conn.execute(select(gold))}


def _records(path: Path) -> list[tuple[str, Any]]:
    """(where the record is: `line N` of a JSON Lines file, `row N` of a JSON list, record)."""
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise GoldError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, list):
            raise GoldError(f"{path}: a JSON gold file is a list of objects")
        return [(f"row {i}", rec) for i, rec in enumerate(data)]
    records = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            records.append((f"line {i + 1}", json.loads(line)))
        except json.JSONDecodeError as err:
            raise GoldError(f"{path}: line {i + 1} is not valid JSON ({err})") from None
    return records


def _answer(value: Any, where: str, vlm: bool) -> str:
    names = [s for s in SIDES if s.startswith("response") == vlm or s in ("tie", "both_bad")]
    if value not in names:
        hint = did_you_mean(str(value), names)
        raise GoldError(f"{where}: answer {value!r} names no side of the pair; {hint}")
    return SIDES[value]


def _label_answer(label: float | None) -> str:
    """A dataset row's answer from its `label`, P(chosen = image_0 is preferred): a label 0
    row's rejected image won, and a tie (0.5; Pick-a-Pic's 0.5/0.5) prefers neither."""
    if label is None or label > 0.5:
        return "image_0"
    return "tie" if label == 0.5 else "image_1"


def read_gold(store: Store, path: str | Path, image_root: str | Path) -> list[tuple[Any, str, str]]:
    """Check every row of a gold file; (pair, answer, where the row is) for each, images
    copied into `image_root` (content-named files: a failed import leaves no database rows).
    Two rows naming one pair with different answers are an error (`_check_repeats`)."""
    path = Path(path)
    vlm = is_vlm(store)
    if path.is_dir():  # a PreferencePair dataset: the answer is read from the row's label
        if vlm:
            raise GoldError(f"{path}: a VLM run takes gold pairs from a JSON Lines file")
        rows = [(p, _label_answer(label), f"row {i}")
                for i, (p, label) in enumerate(import_labeled_pairs(path, image_root))]  # fmt: skip
        _check_repeats(rows, path, vlm)
        return rows
    if not path.is_file():
        raise GoldError(f"{path}: no such gold file")
    out: list[tuple[Any, str, str]] = []
    with store.read.begin() as conn:
        known = set(conn.execute(select(pairs.c.pair_id)).scalars())
    for i, (place, rec) in enumerate(_records(path)):
        where = f"{path}: row {i}"
        if not isinstance(rec, dict):
            raise GoldError(f"{where}: an object with 'answer' and the pair, got {rec!r}")
        for key in rec:
            if key not in ROW_KEYS:
                raise GoldError(f"{where}: unknown key {key!r}; {did_you_mean(key, ROW_KEYS)}")
        answer = _answer(rec.get("answer"), where, vlm)
        if "pair_id" in rec:
            if rec["pair_id"] not in known:
                raise GoldError(f"{where}: pair {rec['pair_id']!r} is not in the database")
            out.append((str(rec["pair_id"]), answer, place))
        elif vlm:
            out.append((vlm_pair(rec, path.parent, image_root, where), answer, place))
        else:
            out.append((_image_pair(rec, path.parent, image_root, where), answer, place))
    _check_repeats(out, path, vlm)
    return out


def _pair_id(pair: Any) -> str:
    return pair if isinstance(pair, str) else str(pair.pair_id)


def _check_repeats(rows: list[tuple[Any, str, str]], path: Path, vlm: bool) -> None:
    """GoldError naming a pair that two rows give different answers (and both rows); a pair
    is the same whether a row names it by id or by its content."""
    first: dict[str, tuple[str, str]] = {}
    said = {"image_0": "response_0", "image_1": "response_1"} if vlm else {}
    for pair, answer, place in rows:
        pair_id = _pair_id(pair)
        if pair_id not in first:
            first[pair_id] = (answer, place)
            continue
        answer_0, place_0 = first[pair_id]
        if answer != answer_0:
            raise GoldError(
                f"{path}: pair {pair_id!r} is named twice with different answers: "
                f"{said.get(answer_0, answer_0)!r} on {place_0}, {said.get(answer, answer)!r} "
                f"on {place}; keep the right one"
            )


def _image_pair(rec: dict[str, Any], base: Path, image_root: str | Path, where: str) -> Pair:
    prompt = rec.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise GoldError(f"{where}: no prompt")
    data = []
    for side in ("image_0", "image_1"):
        ref = rec.get(side)
        if not isinstance(ref, str) or not (base / ref).is_file():
            raise GoldError(f"{where}: {side} {ref!r} is not a file next to the gold file")
        data.append((base / ref).read_bytes())
    names = [save_image(image_root, d, f"{where} {s}") for d, s in zip(data, ("image_0", "image_1"),
                                                                     strict=True)]  # fmt: skip
    return Pair(pair_id_for(prompt, *data), prompt, *names, "gold")


def add_gold(store: Store, path: str | Path, image_root: str | Path) -> dict[str, int]:
    """Import a gold file (all rows or none); returns counts of its rows, new pairs and gold
    pairs in the database, and (only when there are any) `duplicates`: rows that repeat a
    pair an earlier row named with the same answer (each pair is added once)."""
    try:
        rows = read_gold(store, path, image_root)
    except (ValueError, OSError) as err:
        if isinstance(err, GoldError):
            raise
        raise GoldError(str(err)) from err
    new_pairs = list({p.pair_id: p for p, _, _ in rows if isinstance(p, Pair | VlmPair)}.values())
    answers = {_pair_id(p): a for p, a, _ in rows}  # repeats agree (`_check_repeats`)
    now = time.time()
    with store._tx() as conn:  # one transaction: the pairs and their answers, or nothing
        added = insert_pairs(conn, new_pairs, now)
        old = {r.pair_id: r.answer for r in conn.execute(select(gold))}
        for pair_id, answer in answers.items():
            if pair_id in old:
                conn.execute(gold.update().where(gold.c.pair_id == pair_id).values(answer=answer))
            else:
                conn.execute(gold.insert().values(pair_id=pair_id, answer=answer, added_at=now))
    summary = {"rows": len(rows), "new_pairs": added, "gold_pairs": len(gold_answers(store))}
    if len(answers) < len(rows):
        summary["duplicates"] = len(rows) - len(answers)
    return summary
