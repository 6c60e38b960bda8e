"""The labeling database's tables: pairs, votes (one row per vote, undone ones kept), leases
(the pair each annotator is looking at) and settings; SQLAlchemy Core, the same schema on
SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

pairs = Table(
    "pairs",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("pair_id", String(64), nullable=False, unique=True),
    Column("prompt", Text, nullable=False),
    Column("image_0", String(255), nullable=False),  # file names under the image folder
    Column("image_1", String(255), nullable=False),
    Column("source", String(255), nullable=False, default=""),
    # Non-skip votes not undone: the queue hands a pair out until it has `overlap` of them.
    Column("n_votes", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
)
Index("ix_pairs_n_votes", pairs.c.n_votes)

votes = Table(
    "votes",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # order of arrival (undo)
    Column("vote_id", String(64), nullable=False, unique=True),  # client-generated
    Column("pair_id", String(64), nullable=False),
    Column("annotator", String(64), nullable=False),
    Column("choice", String(8), nullable=False),  # left | right | tie | both_bad | skip
    Column("left_image", Integer, nullable=False),  # 0 or 1: which pair image was on the left
    Column("decide_ms", Integer, nullable=False),  # time from showing the pair to the vote
    Column("created_at", Float, nullable=False),  # unix seconds, server clock
    Column("undone", Integer, nullable=False, default=0),
    Column("undone_at", Float, nullable=True),
)
Index("ix_votes_annotator", votes.c.annotator, votes.c.undone, votes.c.pair_id)
Index("ix_votes_pair", votes.c.pair_id)

# A pair handed out by `next_pair` is reserved for its annotator until `expires_at` (unix
# seconds): one row per annotator at most (taking a new pair drops the old lease), so the
# table stays as small as the team and needs no clean-up of expired rows.
leases = Table(
    "leases",
    metadata,
    Column("pair_id", String(64), primary_key=True),
    Column("annotator", String(64), primary_key=True),
    Column("expires_at", Float, nullable=False),
)
Index("ix_leases_annotator", leases.c.annotator)

# The answers to every question of a criteria file (`criteria.py`), one row per vote and
# question; the first question's answer is also the vote's `choice`.
answers = Table(
    "answers",
    metadata,
    Column("vote_id", String(64), primary_key=True),
    Column("criterion", String(64), primary_key=True),
    Column("choice", String(8), nullable=False),  # left | right | tie | both_bad
)

# Gold pairs (`gold.py`): pairs with a known answer, mixed into every annotator's queue to
# measure them; they are rows of `pairs` too (shown like any other) and never exported.
gold = Table(
    "gold",
    metadata,
    Column("pair_id", String(64), primary_key=True),
    Column("answer", String(16), nullable=False),  # image_0 | image_1 | tie | both_bad
    Column("added_at", Float, nullable=False),
)

# VLM response pairs (`vlm_pairs.py`): the pair's image is `pairs.image_0` (= `image_1`), the
# two text responses live here.
responses = Table(
    "responses",
    metadata,
    Column("pair_id", String(64), primary_key=True),
    Column("response_0", Text, nullable=False),
    Column("response_1", Text, nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
