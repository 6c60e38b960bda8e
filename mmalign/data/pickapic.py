"""Pick-a-Pic v2 (Kirstain et al. 2023): read it into PreferencePair rows, write it back.

Each Pick-a-Pic row is one ranking: a caption, two JPEGs (`jpg_0`, `jpg_1`) and
`label_0`/`label_1` (1/0, or 0.5/0.5 for a tie). The reader turns rows into pairs
(winner = `chosen`) and counts every row it skips; the writer produces shards with
the same columns and types so the toy world can pass for Pick-a-Pic in any script.

The split is always named by the caller: the public Diffusion-DPO script silently
defaults to "validation", so a run meant for "train" trains on 20k rows instead of 1M.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, IterableDataset

from .pickapic_files import HUB_KEY, _load_raw
from .schema import ValidationReport, decodable, pair_features, to_pil_image, to_rgb

TiePolicy = Literal["drop", "half", "random"]

# Columns and types of yuvalkirstain/pickapic_v2 (its card), in METHODS.md order.
# The hub copy also has image_0_url, image_1_url and __index_level_0__; the reader
# ignores them and the writer leaves them out (the URLs are dead, the bytes are here).
PICKAPIC_SCHEMA = pa.schema(
    [
        ("caption", pa.string()),
        ("jpg_0", pa.binary()),
        ("jpg_1", pa.binary()),
        ("label_0", pa.float64()),
        ("label_1", pa.float64()),
        ("has_label", pa.bool_()),
        ("are_different", pa.bool_()),
        ("best_image_uid", pa.string()),
        ("image_0_uid", pa.string()),
        ("image_1_uid", pa.string()),
        ("model_0", pa.string()),
        ("model_1", pa.string()),
        ("user_id", pa.int64()),
        ("ranking_id", pa.int64()),
        ("created_at", pa.timestamp("ns")),
        ("num_example_per_prompt", pa.int64()),
    ]
)
PICKAPIC_COLUMNS = tuple(PICKAPIC_SCHEMA.names)
PAIR_FEATURES = pair_features("image", extra=("user_id",))
_UID_NAMESPACE = uuid.UUID("6f1c1d2e-6d3a-5b7e-9a4f-2c8e0b1d7a55")  # fixed: uids reproducible
_EPOCH = datetime(2023, 1, 1)  # placeholder created_at for generated rows
# ----------------------------------------------------------------------- reader


def _user_id(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():  # int64 read back through pandas
        value = int(value)
    return str(value)


def _to_pair(
    row: Mapping[str, Any], index: int, tie_policy: TiePolicy, require_different: bool, seed: int
) -> tuple[dict[str, Any] | None, str | None]:
    """One Pick-a-Pic row -> (pair, None), or (None, reason it is skipped)."""
    if not row.get("caption"):
        return None, "missing_caption"
    if row.get("jpg_0") is None or row.get("jpg_1") is None:
        return None, "missing_image"
    if row.get("has_label") is False:
        return None, "no_label"
    if require_different and row.get("are_different") is False:
        return None, "not_different"
    l0, l1 = row.get("label_0"), row.get("label_1")
    if l0 is None or l1 is None or math.isnan(l0) or math.isnan(l1):
        return None, "bad_label"
    if not (0 <= l0 <= 1 and 0 <= l1 <= 1 and math.isclose(l0 + l1, 1.0)):
        return None, "bad_label"

    first_wins, label = l0 > l1, max(l0, l1)
    if l0 == l1:
        if tie_policy == "drop":
            return None, "tie"
        if tie_policy == "random":
            # Seeded per row (not per call order) so streaming and map agree.
            first_wins, label = random.Random(f"{seed}:{index}").random() < 0.5, 1.0
        else:  # "half": which side is "chosen" does not matter at label 0.5
            first_wins = True
    if not (decodable(row["jpg_0"]) and decodable(row["jpg_1"])):
        return None, "undecodable_image"
    win, lose = ("jpg_0", "jpg_1") if first_wins else ("jpg_1", "jpg_0")
    return {
        "prompt": row["caption"],
        # Keep the original JPEG bytes: no re-encoding, no extra loss.
        "chosen": {"bytes": row[win], "path": None},
        "rejected": {"bytes": row[lose], "path": None},
        "label": float(label),
        "user_id": _user_id(row.get("user_id")),
    }, None


def load_pickapic(
    source: str | Path,
    split: str,
    *,
    tie_policy: TiePolicy = "drop",
    streaming: bool = False,
    require_different: bool = True,
    max_rows: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    key: str = HUB_KEY,
) -> tuple[Dataset | IterableDataset, ValidationReport]:
    """Pick-a-Pic rows as PreferencePair rows (prompt, chosen, rejected, label, user_id, source).

    source: a folder of `{split}-*.parquet` shards (directly or under `data/`, as on
    the hub), a `save_to_disk` folder, or a hub dataset id. `split` has no default.
    tie_policy: "drop" (counted as "tie"), "half" (kept with label 0.5), or
    "random" (a coin seeded by `seed` and the row index picks the winner, label 1).
    max_rows: read at most this many source rows (before filtering). key: where the user named
    `source`, for messages (`--pickapic-root`; `prompts.pickapic_key`).
    With `streaming=True` the result is lazy and the report fills in as it is iterated, over one
    pass (`ValidationReport.pass_rows`: the split's rows from its parquet footers, saved length
    or hub card, at most max_rows), so a second epoch, in any order, leaves it as it is.
    The report names rows, skipped (`examples`) and kept (`source_row`), by their index in
    the split as read: its shards in file-name order, counted on from one shard to the next
    (row 3 of a split of two-row shards is the second row of the second shard; a `shuffle()`d
    stream numbers rows within each shard).
    """
    if tie_policy not in ("drop", "half", "random"):
        raise ValueError(f"tie_policy must be 'drop', 'half' or 'random', got {tie_policy!r}")
    raw = _load_raw(source, split, streaming=streaming, cache_dir=cache_dir, key=key)
    if max_rows is not None and isinstance(raw, IterableDataset):
        raw = raw.take(max_rows)
    elif max_rows is not None:
        raw = raw.select(range(min(max_rows, len(raw))))
    info = raw.info.splits if streaming else None  # a local split's count is set by _stream
    rows = (info[split].num_examples or None) if info and split in info else None
    if rows is not None and max_rows is not None:
        rows = min(rows, max_rows)
    report = ValidationReport(name=f"pickapic:{split}", pass_rows=rows)
    tag = f"pickapic:{split}"

    def convert(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {name: [] for name in PAIR_FEATURES}
        for j, index in enumerate(indices):
            pair, reason = _to_pair(
                {k: v[j] for k, v in batch.items()}, index, tie_policy, require_different, seed
            )
            if pair is None:
                report.skip(index, reason or "unknown")
                continue
            # messages about kept row i name the row read (source_row); a tie kept (`half`)
            report.keep(index, tie=pair["label"] == 0.5)  # is counted apart, as dropped ones
            for name in out:
                out[name].append(tag if name == "source" else pair.get(name))
        return out

    columns = list(raw.column_names or [])
    if isinstance(raw, IterableDataset):
        # IterableDataset.map(features=...) does not decode images; cast does.
        pairs = raw.map(convert, batched=True, with_indices=True, remove_columns=columns)
        return pairs.cast(PAIR_FEATURES), report
    pairs = raw.map(
        convert,
        batched=True,
        with_indices=True,
        remove_columns=columns,
        features=PAIR_FEATURES,
        load_from_cache_file=False,  # a cache hit would skip `convert` and leave the report empty
    )
    # pyarrow's own allocator keeps what the conversion freed (about 5 MiB here); training
    # allocates elsewhere, so hand it back rather than carry it to the peak (issue 19)
    pa.default_memory_pool().release_unused()
    return pairs, report


def pickapic_prompts(
    source: str | Path, split: str, *, cache_dir: str | Path | None = None, key: str = HUB_KEY
) -> list[str]:
    """Unique captions of a split, first occurrence order (e.g. `test_unique`'s 500); `key` as
    for `load_pickapic`."""
    streaming = not Path(source).expanduser().exists()  # on the hub, do not download images
    raw = _load_raw(source, split, streaming=streaming, columns=["caption"], cache_dir=cache_dir,
                    key=key)  # fmt: skip
    captions = (row["caption"] for row in raw) if streaming else raw["caption"]
    return list(dict.fromkeys(c for c in captions if c))


# ----------------------------------------------------------------------- writer


def _jpeg(image: Any, quality: int) -> bytes:
    if isinstance(image, bytes | bytearray):  # already encoded: pass through untouched
        return bytes(image)
    buf = io.BytesIO()
    to_rgb(to_pil_image(image)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def image_uid(data: bytes) -> str:
    """Pick-a-Pic-style image uid: a UUID5 of the encoded bytes' SHA-256 (same bytes, same uid)."""
    return str(uuid.uuid5(_UID_NAMESPACE, hashlib.sha256(data).hexdigest()))


def _int_like(value: Any) -> bool:
    return value is None or isinstance(value, int) or (isinstance(value, str) and value.isdigit())


def write_pickapic(
    rows: Iterable[Mapping[str, Any]],
    out_dir: str | Path,
    split: str,
    *,
    shard_size: int = 1000,
    seed: int = 0,
    quality: int = 95,
    overwrite: bool = False,
) -> list[Path]:
    """Write PreferencePair-like dicts as Pick-a-Pic v2 shards `{split}-0000k-of-0000N.parquet`.

    Each row needs prompt, chosen, rejected (PIL images, [3,H,W] arrays in [0, 1],
    or JPEG bytes kept as is); label (P(chosen wins), default 1; 0.5 = tie) and
    user_id are optional, as are Pick-a-Pic fields to override: has_label,
    are_different, chosen_uid, rejected_uid, chosen_model, rejected_model,
    ranking_id, created_at. A seeded coin puts chosen in jpg_0 or jpg_1, so a
    reader that assumes "image 0 wins" fails on this data as it would on the real one.
    user_id is int64 as on the hub; non-numeric ids fall back to a string column.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale = sorted(out.glob(f"{split}-*.parquet"))
    if stale and not overwrite:
        raise FileExistsError(f"{out} already has {split} shards ({stale[0].name}, ...)")
    for path in stale:
        path.unlink()

    rng = random.Random(seed)
    rows = list(rows)
    prompt_counts = Counter(row["prompt"] for row in rows)
    records = []
    for i, row in enumerate(rows):
        label = 1.0 if row.get("label") is None else float(row["label"])
        sides = [
            (_jpeg(row["chosen"], quality), label, row.get("chosen_uid"), row.get("chosen_model")),
            (
                _jpeg(row["rejected"], quality),
                1.0 - label,
                row.get("rejected_uid"),
                row.get("rejected_model"),
            ),
        ]
        if rng.random() < 0.5:
            sides.reverse()
        (jpg_0, l0, uid_0, m0), (jpg_1, l1, uid_1, m1) = sides
        uid_0, uid_1 = uid_0 or image_uid(jpg_0), uid_1 or image_uid(jpg_1)
        records.append(
            {
                "caption": row["prompt"],
                "jpg_0": jpg_0,
                "jpg_1": jpg_1,
                "label_0": l0,
                "label_1": l1,
                "has_label": row.get("has_label", True),
                "are_different": row.get("are_different", jpg_0 != jpg_1),
                "best_image_uid": "" if l0 == l1 else (uid_0 if l0 > l1 else uid_1),  # tie: none
                "image_0_uid": uid_0,
                "image_1_uid": uid_1,
                "model_0": m0 or "unknown",
                "model_1": m1 or "unknown",
                "user_id": row.get("user_id"),
                "ranking_id": row.get("ranking_id", i),
                "created_at": row.get("created_at", _EPOCH + timedelta(seconds=i)),
                "num_example_per_prompt": prompt_counts[row["prompt"]],
            }
        )

    schema = PICKAPIC_SCHEMA
    if all(_int_like(r["user_id"]) for r in records):
        for r in records:
            r["user_id"] = None if r["user_id"] is None else int(r["user_id"])
    else:
        schema = schema.set(schema.get_field_index("user_id"), pa.field("user_id", pa.string()))
        for r in records:
            r["user_id"] = None if r["user_id"] is None else str(r["user_id"])

    n_shards = max(1, math.ceil(len(records) / shard_size))
    paths = []
    for k in range(n_shards):
        chunk = records[k * shard_size : (k + 1) * shard_size]
        path = out / f"{split}-{k:05d}-of-{n_shards:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(chunk, schema=schema), path)
        paths.append(path)
    return paths
