"""VLM response pairs: an image and a prompt above two text responses (`mmalign label --data
FILE --vlm`).

A database is in one mode: image pairs (the default) or VLM response pairs (the setting
`mode = vlm`, set by the first VLM import). A VLM pair is a row of `pairs` whose `image_0`
and `image_1` are both the pair's image file, and a row of `responses` with its two texts;
the queue, overlap, leases, votes, undo, gold pairs and criteria are the image mode's.

Input: a JSON Lines (or JSON list) file, one object per pair, `prompt`, `image` (a path
relative to the file) and two responses `response_0` / `response_1` (or `chosen` /
`rejected`: which one was chosen is not kept, annotators judge afresh); or any VLM
preference data mmalign reads (`toy:hallucination`, a saved dataset, TRL or LLaVA files;
`mmalign.vlm.data.open_vlm_pairs`). A row with no image, more than one image or an empty
response stops the import with its number; nothing is added.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from .engines import shown_db
from .images import encode_png, save_image
from .store import Pair, Store
from .tables import pairs, responses

MODE = "mode"
MAX_RESPONSE = 20_000  # characters: a response longer than this is refused at import


class VlmDataError(ValueError):
    """A VLM row that cannot be labeled (its number and the reason in the message)."""


@dataclass(frozen=True)
class VlmPair:
    pair_id: str
    prompt: str
    image: str  # file name in the image folder
    response_0: str
    response_1: str
    source: str

    @property
    def pair(self) -> Pair:
        return Pair(self.pair_id, self.prompt, self.image, self.image, self.source)


def vlm_pair_id(prompt: str, image: bytes, response_0: str, response_1: str) -> str:
    """A content id, like `store.pair_id_for`: the same row imported twice is one pair."""
    h = hashlib.sha256(b"vlm\0" + prompt.encode())
    h.update(hashlib.sha256(image).digest())
    for text in (response_0, response_1):
        h.update(hashlib.sha256(text.encode()).digest())
    return h.hexdigest()[:24]


def _response(rec: dict[str, Any], names: tuple[str, str], where: str) -> str:
    for name in names:
        if name in rec:
            value = rec[name]
            if not isinstance(value, str) or not value.strip():
                raise VlmDataError(f"{where}: {name} is empty")
            if len(value) > MAX_RESPONSE:
                raise VlmDataError(f"{where}: {name} has {len(value)} characters "
                                   f"(at most {MAX_RESPONSE})")  # fmt: skip
            return value
    raise VlmDataError(f"{where}: no {names[0]} (or {names[1]})")


def vlm_pair(rec: dict[str, Any], base: Path, image_root: str | Path, where: str,
             source: str = "vlm") -> VlmPair:  # fmt: skip
    """A VlmPair from one object (`prompt`, `image`, `response_0`/`response_1` or
    `chosen`/`rejected`); the image is checked and copied into `image_root`."""
    prompt = rec.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise VlmDataError(f"{where}: no prompt")
    ref = rec.get("image")
    if isinstance(ref, list) and len(ref) == 1:
        ref = ref[0]
    if ref is None or ref == "" or ref == []:
        raise VlmDataError(f"{where}: no image")
    if isinstance(ref, list):
        raise VlmDataError(f"{where}: {len(ref)} images; a response pair has one")
    r0 = _response(rec, ("response_0", "chosen"), where)
    r1 = _response(rec, ("response_1", "rejected"), where)
    if isinstance(ref, bytes | bytearray):
        data = bytes(ref)
    elif isinstance(ref, str):
        file = (base / ref).resolve()
        if not file.is_relative_to(base.resolve()) or not file.is_file():
            raise VlmDataError(f"{where}: image {ref!r} is not a file in {base}")
        data = file.read_bytes()
    else:  # a PIL image from a dataset reader
        data = encode_png(ref)
    name = save_image(image_root, data, f"{where} image")
    return VlmPair(vlm_pair_id(prompt, data, r0, r1), prompt, name, r0, r1, source)


def file_records(path: Path) -> list[Any]:
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise VlmDataError(f"{path}: a JSON file of VLM pairs is a list of objects")
        return data
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_vlm_pairs(source: str | Path, image_root: str | Path, *, split: str = "train",
                   limit: int | None = None) -> list[VlmPair]:  # fmt: skip
    """Every row of `source` as a checked VlmPair (VlmDataError naming the first bad row)."""
    Path(image_root).mkdir(parents=True, exist_ok=True)
    path = Path(source)
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        records = file_records(path)
        first = records[0] if records else {}
        if isinstance(first, dict) and ("response_0" in first or "image" in first):
            from tqdm import tqdm

            out = []
            for i, rec in enumerate(tqdm(records[:limit], desc="import VLM pairs", unit="pair")):
                if not isinstance(rec, dict):
                    raise VlmDataError(f"{path}: row {i} is not an object")
                out.append(vlm_pair(rec, path.parent, image_root, f"{path}: row {i}",
                                    f"vlm:{path.name}"))  # fmt: skip
            return out
    from mmalign.vlm.data import open_vlm_pairs

    try:
        ds, _report = open_vlm_pairs(str(source), split, max_samples=limit, strict=True)
    except ValueError as err:  # strict: "row <i>: <reason>" of the first bad row
        raise VlmDataError(f"{source}: {err}") from None
    from tqdm import tqdm

    out = []
    for i in tqdm(range(len(ds)), desc="import VLM pairs", unit="pair"):
        row = ds[i]
        images = row.get("images") or ([row["image"]] if row.get("image") is not None else [])
        rec = {"prompt": row["prompt"], "image": images, "chosen": row["chosen"],
               "rejected": row["rejected"]}  # fmt: skip
        out.append(vlm_pair(rec, Path("."), image_root, f"{source}: row {i}", f"vlm:{source}"))
    return out


def insert_pairs(conn: Connection, rows: Iterable[Pair | VlmPair], now: float) -> int:
    """Add pairs (and VLM responses) not yet in the database inside `conn`'s transaction."""
    known = set(conn.execute(select(pairs.c.pair_id)).scalars())
    added = 0
    for row in rows:
        pair = row.pair if isinstance(row, VlmPair) else row
        if pair.pair_id in known:
            continue
        known.add(pair.pair_id)
        conn.execute(pairs.insert().values(
            pair_id=pair.pair_id, prompt=pair.prompt, image_0=pair.image_0,
            image_1=pair.image_1, source=pair.source, n_votes=0, created_at=now,
        ))  # fmt: skip
        if isinstance(row, VlmPair):
            conn.execute(responses.insert().values(pair_id=row.pair_id,
                                                   response_0=row.response_0,
                                                   response_1=row.response_1))  # fmt: skip
        added += 1
    return added


def add_vlm_pairs(store: Store, rows: list[VlmPair]) -> int:
    """Import VLM pairs (one transaction); the first import puts the database in VLM mode."""
    import time

    if not is_vlm(store) and store.count_pairs():
        raise VlmDataError(
            f"{shown_db(store.url)} holds image pairs; VLM response pairs need a new database"
        )
    with store._tx() as conn:
        added = insert_pairs(conn, rows, time.time())
    store.set_setting(MODE, "vlm")
    return added


def is_vlm(store: Store) -> bool:
    return store.get_setting(MODE) == "vlm"


def responses_of(store: Store, pair_id: str) -> tuple[str, str]:
    """The pair's two responses (in pair order: response_0, response_1)."""
    with store.read.begin() as conn:
        row = conn.execute(select(responses).where(responses.c.pair_id == pair_id)).first()
    if row is None:
        raise VlmDataError(f"pair {pair_id} has no responses (not a VLM pair)")
    return str(row.response_0), str(row.response_1)


def all_responses(store: Store) -> dict[str, tuple[str, str]]:
    with store.read.begin() as conn:
        return {r.pair_id: (r.response_0, r.response_1) for r in conn.execute(select(responses))}


def response_html(text: str) -> str:
    """A response as the page shows it: escaped (model output is not trusted HTML)."""
    return f'<div class="lbl-resp-text">{html.escape(text)}</div>'
