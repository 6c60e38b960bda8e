"""Connections to the labeling database: SQLite in WAL mode by default, PostgreSQL for a team.

On SQLite the connection runs in WAL mode with `synchronous=NORMAL`: a committed transaction
is in the WAL file before COMMIT returns, so a killed server (SIGKILL) loses nothing it
acknowledged (only a power cut could lose the last transactions, which NORMAL trades for
speed). Write transactions start with `BEGIN IMMEDIATE` so two concurrent votes wait on the
busy timeout instead of failing with "database is locked" when a read lock is upgraded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event

BUSY_TIMEOUT_MS = 10_000


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def make_engine(db: str | Path) -> tuple[Engine, Engine]:
    """(write engine, read engine) for a path (SQLite) or a SQLAlchemy URL (PostgreSQL)."""
    url = str(db)
    if "://" not in url:
        url = sqlite_url(db)
    if not url.startswith("sqlite"):
        engine = create_engine(url, pool_size=16, max_overflow=48, pool_pre_ping=True)
        return engine, engine

    def sqlite_engine(begin: str) -> Engine:
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
            pool_size=16,
            max_overflow=48,
        )

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql(begin)

        return engine

    return sqlite_engine("BEGIN IMMEDIATE"), sqlite_engine("BEGIN")
