"""Load test of the labeling app: vote latency and throughput at 1, 8 and 32 annotators.

Launches `mmalign label` in a subprocess on a synthetic pair dataset and drives it with
concurrent annotators (threads), each logged in as its own user:

- `gradio_client`: `Client.predict(api_name="/vote")`, what the issue's clients use. Note:
  gradio_client polls its message queue every 50 ms (`time.sleep(0.05)` in
  `gradio_client.utils.stream_sse_v1plus`), so its latency has a floor near 50 ms that
  the server does not set.
- `http`: Gradio's own HTTP API for the same endpoint (`POST /gradio_api/call/vote`, then
  the result stream `GET /gradio_api/call/vote/{event_id}`) with one keep-alive session
  per annotator: the server's latency without the client's polling.
- `http1`: the same Gradio route, one call per vote: `vote` answers with the next pair
  (`next`), so `next_pair` is called once at the start.
- `fast`: `POST /label_api/vote` (apps/label/fast_routes.py), a FastAPI route outside
  Gradio's queue on the same login cookie, answering with the next pair: one plain
  HTTP request per vote.
- baseline: `Store.record_vote` called in-process by the same number of threads (the
  database transaction alone), measured in the same run; the table gives the ratios.

Every run is made on each backend of `--backends` (default both): SQLite (a WAL file) and
PostgreSQL (a throwaway PostgreSQL server started for the benchmark, `mmalign_label.pgtemp`,
with its durable defaults: fsync on, synchronous_commit on; a new database per run, the
images in a folder beside it). The last table puts PostgreSQL's p50 / p99 / votes/s beside
SQLite's for each client and level.

After each HTTP/gradio_client run every acknowledged vote is checked in the database:
stored exactly once, under the right annotator. `--think-ms T` makes each annotator look
at a pair for 0.5T to 1.5T ms (uniform) before voting (default 0: back to back, a closed
loop in which the latency at N annotators is about N / the server's votes per second).
`--kill-after N` sends SIGKILL to the server once N votes are acknowledged in the last
run, restarts it and checks again.

`--login-flood K` runs every client and level three times, each on a fresh server: quiet,
then with K anonymous clients sending wrong passwords to `/login` back to back while the
annotators vote, from K addresses (`flood`: the per-address limit answers most with 429)
and from a new address every attempt (`flood_spread`: no limit applies, every attempt
runs scrypt; the addresses come in `X-Forwarded-For`, which the server trusts from
127.0.0.1). The table gives each run's vote p50/p99 and the flooded p99 over the quiet one
(the target is within 2x).

    OMP_NUM_THREADS=1 python benchmarks/label_load.py --out runs/bench/label_load.json
    OMP_NUM_THREADS=1 python benchmarks/label_load.py --clients fast --votes 100 \
        --out runs/bench/label_load_pg.json      # SQLite and PostgreSQL at 1, 8, 32
    OMP_NUM_THREADS=1 python benchmarks/label_load.py --levels 32 --votes 200 \
        --clients gradio_client --kill-after 3000      # the issue's full reliability run
    OMP_NUM_THREADS=1 python benchmarks/label_load.py --levels 8 --votes 150 \
        --clients fast --login-flood 4 --out runs/bench/label_login_flood.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from label_load_clients import ANNOTATORS, LoginFlood, cpu_seconds  # the clients
from label_load_report import report  # the tables
from mmalign_label.pgtemp import TempPostgres
from mmalign_label.store import Pair, Store
from mmalign_label.testing import Server, make_pairs_dataset
from mmalign_label.users import add_user
from tqdm import tqdm


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def run_level(url: str, users: list[str], votes: int, kind: str, acked: dict, lat: list,
              kill: tuple | None = None, think: float = 0.0,
              server_pid: int | None = None, flood: LoginFlood | None = None) -> dict:  # fmt: skip
    """Every user: next pair, `think` seconds looking at it, vote; latency of the vote call
    only. Returns counts, and the server's CPU seconds from the end of the logins to the
    last vote (`server_cpu_s`) when `server_pid` is given."""
    errors: list[str] = []
    stop = threading.Event()
    ready = threading.Barrier(len(users) + 1)
    bar = tqdm(total=len(users) * votes, desc=f"{kind} x{len(users)}", unit="vote", leave=False)

    def annotate(user: str) -> None:
        # independent annotators: think times drawn from [0.5, 1.5] x `think`, so they do
        # not all vote at the same instant (a fixed time would keep the start in lockstep)
        rng = random.Random(user)
        try:
            a = ANNOTATORS[kind](url, user, f"pw-{user}")
        except Exception as err:
            errors.append(f"{user}: login: {err}")
            ready.wait()
            return
        ready.wait()
        mine = acked.setdefault(user, [])
        one_call = kind in ("http1", "fast")  # the vote's reply carries the next pair
        try:
            pair = a.call("next_pair") if one_call else None
            for i in range(votes):
                if stop.is_set():
                    return
                if not one_call:
                    pair = a.call("next_pair")
                if not pair:
                    errors.append(f"{user}: queue empty after {i} votes")
                    return
                vid = uuid.uuid4().hex
                choice = ("left", "right", "tie", "skip")[i % 4]
                if think:
                    time.sleep(think * rng.uniform(0.5, 1.5))
                t0 = time.perf_counter()
                ack = a.call("vote", vid, pair["pair_id"], choice, pair["left_image"], 100)
                lat.append(time.perf_counter() - t0)
                if ack["annotator"] != user or ack["vote_id"] != vid:
                    errors.append(f"{user}: wrong ack {ack}")
                mine.append((vid, pair["pair_id"], choice))
                bar.update()
                if one_call:
                    pair = ack["next"]
        except Exception as err:
            if not stop.is_set():
                errors.append(f"{user}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=annotate, args=(u,), daemon=True) for u in users]
    for t in threads:
        t.start()
    ready.wait()
    if flood is not None:  # after the annotators' logins: the flood meets their votes only
        flood.__enter__()
    t0 = time.perf_counter()
    cpu0 = cpu_seconds(server_pid) if server_pid else 0.0
    if kill is not None:
        server, after = kill
        while sum(len(v) for v in acked.values()) < after and any(t.is_alive() for t in threads):
            time.sleep(0.01)
        stop.set()
        server.kill()
    for t in threads:
        t.join()
    if flood is not None:
        flood.__exit__()
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds(server_pid) - cpu0 if server_pid and kill is None else None
    bar.close()
    return {"errors": errors, "seconds": seconds, "server_cpu_s": cpu}


def check(db: Path | str, acked: dict) -> dict:
    store = Store(db)
    rows = {r["vote_id"]: r for r in store.all_votes()}
    missing = wrong = 0
    for user, vs in acked.items():
        for vid, pair_id, choice in vs:
            row = rows.get(vid)
            if row is None:
                missing += 1
            elif (row["annotator"], row["pair_id"], row["choice"]) != (user, pair_id, choice):
                wrong += 1
    n = sum(len(v) for v in acked.values())
    store.close()
    return {"acknowledged": n, "missing": missing, "wrong_annotator": wrong,
            "stored_once": len(rows) == len(set(rows))}  # fmt: skip


def baseline(db: Path | str, users: list[str], votes: int) -> dict:
    """The same votes straight into the store from threads: the cost of the transaction.
    `db`: a new database (a SQLite path whose old files are removed here, or a URL)."""
    if isinstance(db, Path):
        for old in db.parent.glob(db.name + "*"):
            old.unlink()
    store = Store(db, overlap=len(users))
    store.add_pairs(Pair(f"p{i}", "a prompt", "a.png", "b.png", "bench") for i in range(votes))
    ids = _pair_ids(store)
    lat: list[float] = []

    def annotate(user: str) -> None:
        for i in range(votes):
            t0 = time.perf_counter()
            store.record_vote(vote_id=uuid.uuid4().hex, annotator=user, pair_id=ids[i % len(ids)],
                              choice="left", left_image=0, decide_ms=100)  # fmt: skip
            lat.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=annotate, args=(f"base-{u}",)) for u in users]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return _summary(lat, time.perf_counter() - t0)


def _pair_ids(store: Store) -> list[str]:
    from mmalign_label.tables import pairs
    from sqlalchemy import select

    with store.read.begin() as conn:
        return list(conn.execute(select(pairs.c.pair_id)).scalars())


def _summary(lat: list[float], seconds: float) -> dict:
    return {
        "votes": len(lat),
        "p50_ms": 1000 * statistics.median(lat) if lat else None,
        "p99_ms": 1000 * _pct(lat, 0.99) if lat else None,
        "votes_per_s": len(lat) / seconds if seconds else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--votes", type=int, default=40, help="votes per annotator per run")
    ap.add_argument("--clients", nargs="+", default=["http", "http1", "fast", "gradio_client"],
                    choices=list(ANNOTATORS))  # fmt: skip
    ap.add_argument(
        "--kill-after",
        type=int,
        default=None,
        help="SIGKILL the server after N votes of the last run; restart",
    )
    ap.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="each annotator's time looking at a pair before voting (default 0: "
        "back to back, as fast as the server answers)",
    )
    ap.add_argument(
        "--login-flood",
        type=int,
        default=0,
        metavar="K",
        help="also run each level with K clients hammering /login (see above)",
    )
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"],
                    choices=["sqlite", "postgresql"],
                    help="databases to run on (default both)")  # fmt: skip
    ap.add_argument("--out", default="runs/bench/label_load.json")
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="label_load_"))
    work.mkdir(parents=True, exist_ok=True)
    n_users = max(args.levels)
    data = make_pairs_dataset(work / "pairs", args.votes + 10, size=32)
    if args.login_flood:
        # half of the flood's attempts name an annotator: u00 .. u{K-1} must exist
        n_users = max(n_users, args.login_flood)
    users_file = work / "users.txt"
    if not users_file.exists():
        for k in range(n_users):
            add_user(users_file, f"u{k:02d}", f"pw-u{k:02d}")
    pg = TempPostgres(durable=True).start() if "postgresql" in args.backends else None
    try:
        return _run_all(args, work, data, users_file, n_users, pg)
    finally:
        if pg is not None:
            pg.stop()


def _new_db(work: Path, name: str, backend: str, pg: TempPostgres | None) -> tuple:
    """(db for Store: a path or a URL, the server's database arguments) for a new database."""
    if backend == "sqlite":
        db = work / f"{name}.sqlite"
        for old in work.glob(f"{name}.sqlite*"):
            if old.is_file():
                old.unlink()
        return db, ["--db", str(db)]
    assert pg is not None
    url = pg.database(name.replace("-", "_"))
    return url, ["--db", url, "--images", str(work / f"{name}.images")]


def _run_all(args: argparse.Namespace, work: Path, data: Path, users_file: Path,
             n_users: int, pg: TempPostgres | None) -> int:  # fmt: skip
    results = {"machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                           "python": platform.python_version()},
               "votes_per_annotator": args.votes, "think_ms": args.think_ms,
               "postgresql": None if pg is None else {"bin": str(pg.bin), "durable": pg.durable},
               "runs": []}  # fmt: skip
    phases = ["quiet", "flood", "flood_spread"] if args.login_flood else ["quiet"]
    runs = [(kind, level, phase, backend) for level in args.levels for kind in args.clients
            for phase in phases for backend in args.backends]  # fmt: skip
    for i, (kind, level, phase, backend) in enumerate(runs):
        db, db_args = _new_db(work, f"{kind}-{level}-{phase}-{backend}", backend, pg)
        # every annotator sees every pair (overlap = annotators): the queue never runs dry
        # every simulated annotator comes from 127.0.0.1, where real ones come from their own
        # addresses: the per-client connection cap would count them as one client
        common = ["--users", str(users_file), *db_args, "--overlap", str(n_users),
                  "--connections-per-client", "0"]  # fmt: skip
        server = Server(["--data", str(data), *common], log=work / "server.log").wait()
        users = [f"u{k:02d}" for k in range(level)]
        acked: dict = {}
        lat: list[float] = []
        last = i == len(runs) - 1
        kill = (server, args.kill_after) if (last and args.kill_after) else None
        flood = None
        if phase != "quiet":
            flood = LoginFlood(server.url, args.login_flood, spread=phase == "flood_spread")
        try:
            out = run_level(
                server.url,
                users,
                args.votes,
                kind,
                acked,
                lat,
                kill,
                args.think_ms / 1000,
                server.proc.pid,
                flood,
            )
        finally:
            server.kill()
        cpu = out["server_cpu_s"]
        row = {"client": kind, "annotators": level, "phase": phase, "db": backend,
               "login_flood": flood.summary() if flood else None,
               **_summary(lat, out["seconds"]),
               # the server's CPU per vote (logins excluded): what bounds a closed loop
               "server_cpu_ms_per_vote": 1000 * cpu / len(lat) if cpu and lat else None,
               "errors": out["errors"][:5], "n_errors": len(out["errors"]),
               "load_avg_after": os.getloadavg()}  # fmt: skip
        if kill:
            again = Server(common, log=work / "server.log").wait()  # restart on the same db
            again.kill()
            row["killed_after"] = args.kill_after
        row["check"] = check(db, acked)
        base_db, _ = _new_db(work, f"base-{kind}-{level}-{phase}-{backend}", backend, pg)
        base = baseline(base_db, users, args.votes)
        row["baseline_store"] = base
        if row["p50_ms"] and base["p50_ms"]:
            row["p50_over_store"] = row["p50_ms"] / base["p50_ms"]
            row["store_over_app_throughput"] = base["votes_per_s"] / row["votes_per_s"]
        results["runs"].append(row)
        print(json.dumps(row), flush=True)

    report(results["runs"])
    print(f"load average during the run: {os.getloadavg()} on {os.cpu_count()} CPUs")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"results: {args.out}")
    # A failed vote call (an error, not a lost vote) fails the run too: its numbers are not
    # the route's.
    bad = any(r["check"]["missing"] or r["check"]["wrong_annotator"] or r["n_errors"]
              for r in results["runs"])  # fmt: skip
    if any(r["n_errors"] for r in results["runs"]):
        print("some vote calls failed: see each run's `errors` in the JSON")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
