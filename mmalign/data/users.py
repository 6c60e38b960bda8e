"""Per-user pairs for PPD (Dang et al. CVPR 2025): `mmalign data users SOURCE --out DIR`.

PPD embeds a user from N = 4 of their decided pairs (the paper's N, `ppd.shots`) and trains
Diffusion-DPO on per-user pairs; its evaluation conditions on users it never trained on. Most
Pick-a-Pic v2 users have fewer pairs than that, and a PPD recipe refuses such users
(`ppd_recipe.check_user_rows`). `mmalign data users` keeps the users with at least `min_pairs`
decided pairs, splits them by user (seeded; no user on both sides) into training and held-out
users (`plan_user_splits`), and writes (`write_user_splits`):

- `DIR/train`, `DIR/heldout`: saved PreferencePair folders (one split each, recorded as
  `train` and `heldout`) under `DIR/dataset_dict.json`, so `data.path: DIR` with
  `data.split: train` and `data.path: DIR/train` both read the training users;
- `DIR/summary.json`: the rows and users kept and dropped, by reason.

Only decided pairs are written: a tie (label 0.5) shows no preference, so the user encoder
skips it and Diffusion-DPO does not train on it (the training reader drops Pick-a-Pic's ties).
Each user's rows keep their order as read, so a held-out user's first `ppd.shots` rows are the
examples `mmalign data user-embed` reads and the rest are pairs the encoder never saw.

The default `min_pairs` is PPD_SHOTS + HELDOUT_EVAL_PAIRS = 5: 4 to embed a user and at least
one more to evaluate a held-out user on. It applies to every user, so the held-out users are
a random draw from the same users as the training ones.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..config import InputError
from ..words import plural

PPD_SHOTS = 4  # the paper's N, `ppd.shots`' default (mmalign/train/config.py, PPDConfig)
HELDOUT_EVAL_PAIRS = 1  # a held-out user's pairs beyond its shots: unseen by the encoder
DEFAULT_MIN_PAIRS = PPD_SHOTS + HELDOUT_EVAL_PAIRS
DEFAULT_HELDOUT_SHARE = 0.1  # mmalign's choice: the share of kept users held out
SPLITS = ("train", "heldout")
SUMMARY = "summary.json"
WRITTEN = (*SPLITS, "dataset_dict.json", SUMMARY)  # what a build writes (and --overwrite replaces)
COUNT_BATCH = 10_000  # rows per read of the user_id and label columns
MAX_BUCKETS = 12  # pair counts an error message lists (users by decided pairs)


@dataclass
class UserCounts:
    """Per row: its user (None: none given) and whether it is a tie; per user: decided and
    tied pairs, users in order of first appearance."""

    users: list[str | None] = field(default_factory=list)
    tied: list[bool] = field(default_factory=list)
    decided: Counter[str] = field(default_factory=Counter)
    ties: Counter[str] = field(default_factory=Counter)

    @property
    def no_user(self) -> int:
        return sum(u is None for u in self.users)

    def seen(self) -> list[str]:
        return list(dict.fromkeys(u for u in self.users if u is not None))


def _user(value: Any) -> str | None:
    """A row's user id as PPD reads it (`str`); None, or a blank id, is no user."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def count_pairs(rows: Any, *, where: str = "SOURCE", progress: bool = True) -> UserCounts:
    """The user and tie of every row, read from the `user_id` and `label` columns only (no
    image decoded); a row with no label is decided (its chosen image won, as PreferencePair
    reads it). No `user_id` column is an InputError naming `where`."""
    columns = list(rows.column_names)
    if "user_id" not in columns:
        raise InputError(
            f"{where}: no user_id column (columns: {', '.join(columns)}); per-user pairs need "
            "the user of every pair (Pick-a-Pic v2 has one: give it, or its saved copy)"
        )
    wanted = ["user_id", *(["label"] if "label" in columns else [])]
    counts = UserCounts()
    with tqdm(total=len(rows), desc="counting pairs per user", unit="pair",
              disable=not progress) as bar:  # fmt: skip
        for batch in rows.select_columns(wanted).iter(batch_size=COUNT_BATCH):
            labels = batch.get("label") or [None] * len(batch["user_id"])
            for value, label in zip(batch["user_id"], labels, strict=True):
                user = _user(value)
                tie = label is not None and float(label) == 0.5  # user_embed's rule
                counts.users.append(user)
                counts.tied.append(tie)
                if user is not None:
                    (counts.ties if tie else counts.decided)[user] += 1
            bar.update(len(batch["user_id"]))
    return counts


def pair_histogram(counts: UserCounts) -> dict[int, int]:
    """{decided pairs: users with that many}, over every user seen."""
    return dict(sorted(Counter(counts.decided[u] for u in counts.seen()).items()))


def keep_users(counts: UserCounts, min_pairs: int) -> tuple[list[str], dict[str, list[str]]]:
    """(users with >= `min_pairs` decided pairs, the others by reason: `only_ties`, or
    `too_few_pairs`). No user kept is an InputError saying how many users had how many."""
    if min_pairs < 1:
        raise InputError(f"--min-pairs must be >= 1, got {min_pairs}")
    seen = counts.seen()
    if not seen:
        raise InputError(
            f"none of the {plural(len(counts.users), 'row')} read has a user_id: per-user "
            "pairs need the user of every pair"
        )
    kept = [u for u in seen if counts.decided[u] >= min_pairs]
    dropped = {
        "only_ties": [u for u in seen if counts.decided[u] == 0],
        "too_few_pairs": [u for u in seen if 0 < counts.decided[u] < min_pairs],
    }
    if not kept:
        buckets = [f"{n} with {k}" for k, n in pair_histogram(counts).items()]
        more = len(buckets) - MAX_BUCKETS
        had = "; ".join(buckets[:MAX_BUCKETS]) + (f"; ... ({more} counts more)" if more > 0 else "")
        raise InputError(
            f"no user has >= {min_pairs} decided (untied) pairs (--min-pairs): of the "
            f"{plural(len(seen), 'user')} read, by decided pairs: {had}. Read more rows (a "
            f"larger --max-rows, or none), or lower --min-pairs (PPD embeds a user from "
            f"ppd.shots pairs, {PPD_SHOTS} by default, and a held-out user needs one more to be "
            "evaluated on)"
        )
    return kept, dropped


def check_heldout(heldout_users: int | None, heldout_share: float | None) -> None:
    """The held-out options, checked before any row is read: one of them, in range."""
    if heldout_users is not None and heldout_share is not None:
        raise InputError("give --heldout-users or --heldout-share, not both")
    if heldout_users is not None and heldout_users < 0:
        raise InputError(f"--heldout-users must be >= 0, got {heldout_users}")
    if heldout_share is not None and not 0.0 <= heldout_share < 1.0:
        raise InputError(f"--heldout-share must be in [0, 1), got {heldout_share}")


def heldout_count(
    users: int, heldout_users: int | None, heldout_share: float | None
) -> tuple[int, str]:
    """(how many of `users` kept users are held out, the rule in words): `heldout_users`, else
    `heldout_share` of them (rounded, at least 1 where the share is above 0; default
    DEFAULT_HELDOUT_SHARE); at least one user must be left to train on."""
    check_heldout(heldout_users, heldout_share)
    if heldout_users is not None:
        k, given = heldout_users, f"--heldout-users {heldout_users}"
    else:
        share = DEFAULT_HELDOUT_SHARE if heldout_share is None else heldout_share
        k, given = (max(1, round(share * users)) if share > 0 else 0), f"--heldout-share {share}"
    if k >= users:
        raise InputError(
            f"{given} holds out {plural(k, 'user')} of the {plural(users, 'user')} kept, leaving "
            "none to train on; hold out fewer (--heldout-users 0 trains on all of them), or "
            "keep more users (--max-rows, --min-pairs)"
        )
    return k, given


def split_users(users: list[str], k: int, seed: int) -> tuple[list[str], list[str]]:
    """(training users, `k` held-out users): a seeded shuffle of the sorted ids, so the split
    depends on the users and the seed alone, not on the order the rows were read in."""
    order = sorted(users)
    random.Random(seed).shuffle(order)
    return sorted(order[k:]), sorted(order[:k])


def _as_split(rows: Any, indices: list[int], name: str) -> Any:
    """`rows[indices]` recorded as split `name` (a saved split is read back by that name,
    `pickapic.check_saved_split`; `select` keeps the source's); no rows are copied here."""
    from datasets import NamedSplit, concatenate_datasets

    return concatenate_datasets([rows.select(indices)], split=NamedSplit(name))


@dataclass
class UserSplits:
    """What `plan_user_splits` decided: the users kept (train, held out) and dropped (by
    reason), the rows each split gets (indices into the rows, in their order), and the
    counts that `write_user_splits` records."""

    counts: UserCounts
    min_pairs: int
    seed: int
    rule: str
    train: list[str]
    heldout: list[str]
    dropped: dict[str, list[str]]
    indices: dict[str, list[int]]


def plan_user_splits(
    rows: Any,
    *,
    min_pairs: int = DEFAULT_MIN_PAIRS,
    heldout_users: int | None = None,
    heldout_share: float | None = None,
    seed: int = 0,
    where: str = "SOURCE",
    progress: bool = True,
) -> UserSplits:
    """Count, keep and split the users of `rows` (PreferencePair rows with `user_id`; module
    docstring); nothing is written. Each split's rows are its users' decided pairs, in the
    order read."""
    counts = count_pairs(rows, where=where, progress=progress)
    kept, dropped = keep_users(counts, min_pairs)
    k, rule = heldout_count(len(kept), heldout_users, heldout_share)
    train, heldout = split_users(kept, k, seed)
    side = {**dict.fromkeys(train, "train"), **dict.fromkeys(heldout, "heldout")}
    indices: dict[str, list[int]] = {name: [] for name in SPLITS}
    for i, (user, tie) in enumerate(zip(counts.users, counts.tied, strict=True)):
        if user in side and not tie:
            indices[side[user]].append(i)
    return UserSplits(counts, min_pairs, seed, rule, train, heldout, dropped, indices)


def write_user_splits(
    rows: Any, plan: UserSplits, out: str | Path, *, read: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write `plan`'s splits of `rows` into `out` (module docstring) and the summary, also
    returned, to `out/summary.json`; `read`: what the source was and what its reader skipped,
    recorded as given. The caller checks `out` (`mmalign data users` replaces an earlier build
    there only with --overwrite)."""
    from datasets import DatasetDict

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = DatasetDict({name: _as_split(rows, plan.indices[name], name) for name in SPLITS})
    splits.save_to_disk(str(out))
    counts = plan.counts
    of_dropped = sum(counts.decided[u] for users in plan.dropped.values() for u in users)
    summary = {
        "kind": "users",
        **({"read": read} if read else {}),
        "min_pairs": plan.min_pairs,
        "seed": plan.seed,
        "heldout_rule": plan.rule,
        "rows": {
            "read": len(counts.users),
            "written": {name: len(plan.indices[name]) for name in SPLITS},
            "dropped": {
                "no_user_id": counts.no_user,
                "tie": sum(counts.ties.values()),
                "user_too_few_pairs": of_dropped,
            },
        },
        "users": {
            "seen": len(counts.seen()),
            "kept": {"train": len(plan.train), "heldout": len(plan.heldout)},
            "dropped": {reason: len(users) for reason, users in plan.dropped.items()},
            "by_decided_pairs": {str(n): u for n, u in pair_histogram(counts).items()},
        },
        "heldout_users": plan.heldout,
        "paths": {**{name: str(out / name) for name in SPLITS}, "summary": str(out / SUMMARY)},
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def describe(summary: dict[str, Any]) -> str:
    """The summary in a few lines, as `mmalign data users` prints it."""
    rows, users = summary["rows"], summary["users"]
    written, dropped = rows["written"], rows["dropped"]
    reasons = ", ".join(f"{reason} {n}" for reason, n in users["dropped"].items() if n)
    lines = [
        f"users: {users['seen']} seen, {sum(users['kept'].values())} kept with >= "
        f"{summary['min_pairs']} decided pairs ({users['kept']['train']} train, "
        f"{users['kept']['heldout']} held out), "
        f"{sum(users['dropped'].values())} dropped{f' ({reasons})' if reasons else ''}",
        f"pairs: {rows['read']} read, {written['train']} train, {written['heldout']} held out; "
        f"dropped: {dropped['tie']} tied, {dropped['user_too_few_pairs']} of dropped users, "
        f"{dropped['no_user_id']} without a user_id",
    ]
    paths = summary["paths"]
    lines.append(f"wrote {paths['train']}, {paths['heldout']} and {paths['summary']}")
    return "\n".join(lines)
