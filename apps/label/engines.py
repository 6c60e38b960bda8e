"""Connections to the labeling database: SQLite in WAL mode by default, PostgreSQL for a team.

On SQLite the connection runs in WAL mode with `synchronous=NORMAL`: a committed transaction
is in the WAL file before COMMIT returns, so a killed server (SIGKILL) loses nothing it
acknowledged (only a power cut could lose the last transactions, which NORMAL trades for
speed). Write transactions start with `BEGIN IMMEDIATE` so two concurrent votes wait on the
busy timeout instead of failing with "database is locked" when a read lock is upgraded.

A PostgreSQL URL without a driver (`postgresql://...`, SQLAlchemy's default there is
psycopg2) is run on psycopg 3, the `app` extra's driver. The server is reached once when the
engine is made, so a wrong host, port, password or database name stops the app at start
with a message naming the URL (its password hidden), not at the first vote.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

BUSY_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 10  # an unroutable host fails after this, not after the OS's minutes


class DatabaseError(ValueError):
    """The database named by --db cannot be used: a bad URL, a missing driver, no server."""


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def _enable_wal(cur: Any) -> None:
    """Put the database in WAL mode (a setting stored in the file, so once is enough). Switching
    a new database takes an exclusive lock and SQLite answers "database is locked" at once,
    without its busy handler, when several servers open it at the same moment (measured: 5 of
    150 rounds of 8 servers on a new file); so retry until the busy timeout has passed."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def make_engine(db: str | Path) -> tuple[Engine, Engine]:
    """(write engine, read engine) for a path (SQLite) or a SQLAlchemy URL (PostgreSQL)."""
    url = str(db)
    if "://" not in url:
        url = sqlite_url(db)
    if not url.startswith("sqlite"):
        engine = _server_engine(url)
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
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            _enable_wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql(begin)

        return engine

    return sqlite_engine("BEGIN IMMEDIATE"), sqlite_engine("BEGIN")


def shown_db(db: str | Path) -> str:
    """`db` (a SQLite path or a database URL) as messages and logs show it: a URL's
    password hidden."""
    url = str(db)
    if "://" not in url:
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return re.sub(r"://[^@/]*@", "://***@", url)


def server_url(url: str) -> URL:
    """`url` parsed; postgresql:// and postgres:// get the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        shown = re.sub(r"://[^@/]*@", "://***@", url)  # no password in the message
        raise DatabaseError(
            f"--db {shown!r} is neither a file path nor a database URL: {err}"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _server_engine(url: str) -> Engine:
    parsed = server_url(url)
    shown = parsed.render_as_string(hide_password=True)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    try:
        engine = create_engine(parsed, pool_size=16, max_overflow=48, pool_pre_ping=True,
                               connect_args=connect_args)  # fmt: skip
    except ImportError as err:
        raise DatabaseError(
            f"--db {shown}: the database driver is missing ({err}); for PostgreSQL "
            "`pip install 'psycopg[binary]'` (in mmalign's app extra)"
        ) from None
    try:
        with engine.connect():
            pass
    except DBAPIError as err:
        engine.dispose()
        reason = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        raise DatabaseError(f"cannot connect to the database {shown}: {reason}") from None
    return engine


def dialect_insert(conn: Connection, table: Any) -> Any:
    """`insert(table)` of the connection's dialect: SQLite's and PostgreSQL's both take
    `.on_conflict_do_nothing()` / `.on_conflict_do_update()`, so that two servers writing
    the same row at once neither fail nor need a read first."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise DatabaseError(f"unsupported database {conn.dialect.name!r}: SQLite or PostgreSQL")
    return insert(table)
