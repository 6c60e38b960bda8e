"""A throwaway PostgreSQL server in a temporary folder, for the tests and the load benchmark.

No system service and no package install: the binaries come from the `pgserver` wheel (a
self-contained PostgreSQL 16, in the `app`/`dev` extras) or, without it, from the system's
`initdb`/`postgres` (PATH, then /usr/lib/postgresql/*/bin). PostgreSQL refuses to run as
root, so under root the cluster belongs to the unprivileged `nobody` user (its data folder
is chowned to it; nothing is added to /etc/passwd).

The server listens on 127.0.0.1 on a free port with `trust` authentication (only local
clients can reach it) and lives until `stop()`; `database()` gives each test a database of
its own. `durable=False` turns fsync off: a test kills the labeling server, never
PostgreSQL, so what is committed survives either way, and initdb and CREATE DATABASE are
several times faster.

    with TempPostgres() as pg:
        url = pg.database("labels")   # postgresql://postgres@127.0.0.1:PORT/labels

From a shell, a server that keeps its data in a folder (reused on the next start) and runs
until Ctrl-C, for trying `mmalign label --db postgresql://...` on one machine:

    python -m mmalign_label.pgtemp --dir /srv/label-pg --port 5433 --database labels
"""

from __future__ import annotations

import atexit
import glob
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .testing import free_port

SUPERUSER = "postgres"
_RUN_AS_ROOT = "nobody"


def _death_signal() -> Callable[[], None] | None:
    """A function for the child before exec (after it became `nobody`): Linux sends the
    server SIGINT, a fast shutdown, when the process that started it dies, so a killed test
    run leaves no server behind. libc is looked up here, in the parent: `nobody` may not be
    able to read Python's own modules (a Python under /root)."""
    if sys.platform != "linux":
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, int(signal.SIGINT))  # 1 = PR_SET_PDEATHSIG


def find_bin() -> Path:
    """The folder holding `initdb` and `postgres`: pgserver's, else the system's."""
    # the wheel ships its binaries next to the module; found without importing it (its
    # import creates a runtime folder and warns where XDG_RUNTIME_DIR is unset)
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        wheel = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (wheel / "postgres").is_file():
            return wheel
    found = shutil.which("initdb")
    if found and (Path(found).resolve().parent / "postgres").is_file():
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                      key=lambda p: int(Path(p).parts[-3]))  # fmt: skip
    if versions:
        return Path(versions[-1]).parent
    raise RuntimeError(
        "no PostgreSQL binaries found: `pip install pgserver` (or `pip install -e '.[app]'`), "
        "or install PostgreSQL so that `initdb` and `postgres` are on PATH"
    )


_COPIES: dict[Path, Path] = {}


def _runnable_copy(bin_dir: Path, user: dict[str, Any]) -> Path:
    """`bin_dir`, or a copy of its installation under /tmp when `user` cannot run it there
    (a checkout under /root, mode 700, holds the pgserver wheel): PostgreSQL finds its
    libraries and share files relative to its binaries, so the copied tree runs as is."""
    try:
        probe = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True,
                               cwd="/", check=False, **user)  # fmt: skip
        if probe.returncode == 0:
            return bin_dir
    except PermissionError:
        pass
    if bin_dir not in _COPIES:
        target = Path(tempfile.mkdtemp(prefix="mmalign-pgbin-"))
        target.chmod(0o755)
        install = bin_dir.parent  # site-packages/pgserver/pginstall for the wheel
        dest = target / install.parent.name / install.name
        shutil.copytree(install, dest, symlinks=True)
        # the wheel's binaries load libpq from $ORIGIN/../../../pgserver.libs: keep the layout
        libs = install.parent.parent / f"{install.parent.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, target / libs.name, symlinks=True)
        atexit.register(shutil.rmtree, target, True)
        _COPIES[bin_dir] = dest / bin_dir.name
    return _COPIES[bin_dir]


class TempPostgres:
    """initdb + postgres on 127.0.0.1:`port` in a temporary folder that `stop()` removes, or
    in `folder`, kept (and reused when it holds a cluster already)."""

    def __init__(self, *, port: int | None = None, durable: bool = False,
                 max_connections: int = 400, bin_dir: Path | None = None,
                 folder: Path | None = None) -> None:  # fmt: skip
        self.bin = bin_dir or find_bin()
        self.port = port or free_port()
        self.durable = durable
        self.max_connections = max_connections
        self.keep = folder is not None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        self.dir = folder.resolve() if folder else Path(tempfile.mkdtemp(prefix="mmalign-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._retried = False
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:  # PostgreSQL will not run as root
            import pwd

            entry = pwd.getpwnam(_RUN_AS_ROOT)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            self._user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            self.bin = _runnable_copy(self.bin, self._user)

    @property
    def url(self) -> str:
        return self.url_for(SUPERUSER)

    def url_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        out = subprocess.run([str(self.bin / args[0]), *args[1:]], capture_output=True,
                             text=True, env=env, cwd=self.dir, **self._user)  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({out.returncode}):\n{out.stdout}{out.stderr}")

    def start(self, timeout: float = 60) -> TempPostgres:
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        options = ["-c", f"max_connections={self.max_connections}",
                   "-c", "listen_addresses=127.0.0.1",
                   "-c", f"unix_socket_directories={self.dir}"]  # fmt: skip
        if not self.durable:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off"]  # fmt: skip
        cmd = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), *options]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
                                         start_new_session=True, preexec_fn=_death_signal(),
                                         **self._user)  # fmt: skip
        try:
            self._wait(timeout)
        except RuntimeError:
            # the free port was taken before postgres bound it: once more on another port
            if "could not bind" not in self._tail() or self.keep or self._retried:
                raise
            self._retried = True
            self.port = free_port()
            return self.start(timeout)
        return self

    def _initdb(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-instructions",
                  *([] if self.durable else ["--no-sync"]))  # fmt: skip

    def _wait(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}):\n{self._tail()}")
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"postgres did not start in {timeout} s") from None
                time.sleep(0.1)

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def database(self, name: str) -> str:
        """Create database `name` (dropped first if it exists); its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL after 30 s; a temporary folder is removed."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Run a PostgreSQL server for the labeling app until Ctrl-C (see the module docstring)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m mmalign_label.pgtemp", description=main.__doc__)
    ap.add_argument("--dir", type=Path, required=True, help="data folder (created, then reused)")
    ap.add_argument("--port", type=int, default=5433)
    ap.add_argument("--database", default="labels", help="created when missing")
    args = ap.parse_args(argv)
    pg = TempPostgres(port=args.port, durable=True, max_connections=200, folder=args.dir)
    pg.start()

    def _stop(*_: object) -> None:
        raise KeyboardInterrupt  # `kill` stops it as Ctrl-C does: a clean shutdown

    signal.signal(signal.SIGTERM, _stop)
    try:
        import psycopg
        from psycopg import sql

        with psycopg.connect(pg.url, autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [args.database])
            if found.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(args.database)))
        print(f"PostgreSQL {pg.bin} on 127.0.0.1:{pg.port}, data in {pg.data}; Ctrl-C stops it")
        print(f"  mmalign label --db {pg.url_for(args.database)} --images FOLDER ...", flush=True)
        assert pg.proc is not None
        pg.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
