"""The labeling app launched in a subprocess: login required on every route, identities
from the session, concurrent annotators through `gradio_client`, SIGKILL and restart.

The tests of votes, undo, export, concurrent annotators and the SIGKILL run on SQLite and
on PostgreSQL (`db_server`, parametrised; the session's throwaway PostgreSQL server from
conftest.py); the route-security tests on SQLite (`server`): the routes do not depend on
the database. The SIGKILL test: 32 annotators over the fast route, the server killed
mid-run and restarted, every in-flight vote resent; at 40 votes each (killed after 400) in
`make test`, at the issue's full 200 each (killed after 2000) in `make test-acceptance`
(`MMALIGN_ACCEPTANCE=1`).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("gradio")
import httpx
from gradio_client import Client
from label_helpers import login_cookie
from mmalign_label.store import Store
from mmalign_label.testing import Server, make_pairs_dataset, serve
from mmalign_label.users import add_user

pytestmark = pytest.mark.timeout(300)
N_USERS = 10
N_VOTES = 12


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("label")
    data = make_pairs_dataset(root / "pairs", 40, size=24)
    users = root / "users.txt"
    for k in range(N_USERS):
        add_user(users, f"u{k:02d}", f"pw-u{k:02d}")
    add_user(users, "boss", "pw-boss", "admin")
    return {"root": root, "data": data, "users": users}


def _database(request, root: Path, backend: str, name: str) -> tuple[str, list[str]]:
    """(the --db value, the server's database arguments) for a new database on `backend`."""
    if backend == "sqlite":
        db = str(root / f"{name}.sqlite")
        return db, ["--db", db]
    db = request.getfixturevalue("postgres").database(name)
    return db, ["--db", db, "--images", str(root / f"{name}.images")]


@pytest.fixture(scope="module")
def server(world):
    db = world["root"] / "labels.sqlite"
    args = ["--data", str(world["data"]), "--users", str(world["users"]), "--db", str(db),
            "--overlap", str(N_USERS)]  # fmt: skip
    with serve(args, log=world["root"] / "server.log") as s:
        s.db = db
        yield s


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_server(request, world):
    """A server on each backend; `db` is its --db value, `images` its image folder option."""
    db, db_args = _database(request, world["root"], request.param, f"votes_{request.param}")
    args = ["--data", str(world["data"]), "--users", str(world["users"]), *db_args,
            "--overlap", str(N_USERS)]  # fmt: skip
    with serve(args, log=world["root"] / f"server-{request.param}.log") as s:
        s.db, s.db_args = db, db_args
        yield s


def _get(url: str, cookie: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _post(url: str, body: bytes, cookie: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} | ({"Cookie": cookie} if cookie else {})
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_no_route_serves_pairs_votes_or_images_without_login(server, world) -> None:
    image = next((Path(str(server.db) + ".images")).iterdir())
    prompt = Store(server.db).next_pair("nobody").prompt.encode()
    for path in ["/config", "/gradio_api/info", "/gradio_api/openapi.json",
                 f"/gradio_api/file={image}", f"/file={image}", f"/gradio_api/file/{image}",
                 "/gradio_api/queue/data?session_hash=x",
                 "/gradio_api/call/next_pair/abc"]:  # fmt: skip
        status, body = _get(server.url + path)
        assert status in (401, 403, 404), (path, status)
        assert prompt not in body and b"\x89PNG" not in body, path
    assert _get(server.url + "/label_api/next_pair")[0] == 401  # the fast path, too
    status, body = _post(server.url + "/label_api/vote", b'{"vote_id": "x"}')
    assert status == 401 and prompt not in body
    for api in ("next_pair", "my_votes", "vote", "admin_stats"):
        status, body = _post(server.url + f"/gradio_api/call/{api}", b'{"data": []}')
        assert status in (401, 403), (api, status)
    status, body = _post(server.url + "/gradio_api/queue/join", b'{"data": [], "fn_index": 0}')
    assert status in (401, 403)
    status, body = _get(server.url + "/")
    assert prompt not in body  # the login page, nothing of the data
    with pytest.raises(ValueError):
        Client(server.url, auth=("u00", "wrong password"), verbose=False)


def test_open_gradio_routes_and_the_login_page_need_a_login(server) -> None:
    # Gradio itself leaves /cancel, /heartbeat, /monitoring/{key} ... open
    cancel = b'{"session_hash": "abc", "fn_index": 0, "event_id": "abc"}'
    assert _post(server.url + "/gradio_api/cancel", cancel)[0] == 401
    for path in ["/gradio_api/heartbeat/abc", "/monitoring/abc", "/gradio_api/startup-events",
                 "/gradio_api/stream/abc/0/1/playlist.m3u8", "/gradio_api/info"]:  # fmt: skip
        assert _get(server.url + path)[0] in (401, 404), path
    status, page = _get(server.url + "/")  # the login page: no API description
    assert status == 200 and b"auth_required" in page
    assert b"my_votes" not in page and b"admin_stats" not in page
    status, page = _get(server.url + "/", login_cookie(server.url, "u00", "pw-u00"))
    assert status == 200 and b"my_votes" in page  # signed in, the page is Gradio's own


def _call(url: str, api: str, cookie: str) -> str:
    status, raw = _post(url + f"/gradio_api/call/{api}", b'{"data": []}', cookie)
    assert status == 200, raw
    return str(json.loads(raw)["event_id"])


def test_results_and_events_belong_to_their_user(server) -> None:
    a, b = login_cookie(server.url, "u08", "pw-u08"), login_cookie(server.url, "u09", "pw-u09")
    pair = json.loads(_get(server.url + "/label_api/next_pair", a)[1])
    vid = uuid.uuid4().hex
    vote = {"vote_id": vid, "pair_id": pair["pair_id"], "choice": "left", "left_image": 0,
            "decide_ms": 5}  # fmt: skip
    assert _fast_vote(server.url, a, vote)[0] == 200
    event = _call(server.url, "my_votes", a)
    # b knows a's event id (its session hash too): every way to read or stop it is refused
    for path in [f"/gradio_api/call/my_votes/{event}", f"/gradio_api/call/vote/{event}",
                 f"/gradio_api/queue/data?session_hash={event}",
                 f"/gradio_api/heartbeat/{event}"]:  # fmt: skip
        status, body = _get(server.url + path, b)
        assert status == 403 and vid.encode() not in body, (path, status, body[:200])
    cancel = json.dumps({"session_hash": event, "fn_index": 0, "event_id": event}).encode()
    assert _post(server.url + "/gradio_api/cancel", cancel, b)[0] == 403
    join = json.dumps({"data": [], "fn_index": 0, "session_hash": event}).encode()
    assert _post(server.url + "/gradio_api/queue/join", join, b)[0] == 403
    status, body = _get(server.url + f"/gradio_api/call/my_votes/{event}", a)  # a's own
    assert status == 200 and b"event: complete" in body and vid.encode() in body
    mine = _call(server.url, "my_votes", b)  # b reads b's own results
    status, body = _get(server.url + f"/gradio_api/call/my_votes/{mine}", b)
    assert status == 200 and b"event: complete" in body and vid.encode() not in body
    client = Client(server.url, auth=("u08", "pw-u08"), verbose=False)  # the queue's own way
    assert vid in {v["vote_id"] for v in client.predict(api_name="/my_votes")}
    assert client.predict(api_name="/undo")["pair_id"] == pair["pair_id"]


def _login_from(url: str, address: str, user: str, password: str) -> tuple[int, bytes]:
    # the server trusts X-Forwarded-For from 127.0.0.1 (uvicorn's default, a local proxy):
    # each test address is a client of its own
    body = f"username={user}&password={password}".encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-For": address}
    req = urllib.request.Request(url + "/login", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_failed_logins_are_limited_per_address(server) -> None:
    address = "203.0.113.7"
    for k in range(10):  # the default limit: 10 failed logins a minute, names known or not
        user = "u00" if k % 2 else f"ghost{k}"
        assert _login_from(server.url, address, user, "wrong")[0] == 400
    over = [
        _login_from(server.url, address, user, password)
        for user, password in [("u00", "wrong"), ("ghost", "wrong"), ("u00", "pw-u00")]
    ]
    assert {status for status, _ in over} == {429}  # fmt: skip
    # the same answer for every name; only the seconds to wait count down between them
    assert len({re.sub(rb"\d+", b"N", body) for _, body in over}) == 1
    assert _login_from(server.url, "203.0.113.8", "u00", "pw-u00")[0] == 200  # per address


def test_guesses_spread_over_addresses_are_limited_per_64_and_per_account(server) -> None:
    # one host's IPv6 /64 (2^64 addresses): one client, limited after 10 failures
    tries = [_login_from(server.url, f"2001:db8:7::{k:x}", "u09", "wrong") for k in range(1, 13)]
    assert [status for status, _ in tries] == [400] * 10 + [429] * 2
    limited = [tries[-1][1]]  # the answer of a client over its limit
    # an account guessed at from many addresses, one guess each: NAME_LIMIT (20) failures in
    # all, the 10 above included; then the same 429 as a client's, for a name that exists
    # and for one that does not, and for the right password too (no check)
    for k in range(10):
        assert _login_from(server.url, f"198.51.100.{k + 1}", "u09", "wrong")[0] == 400
    for k in range(20):
        assert _login_from(server.url, f"198.51.101.{k + 1}", "nobody", "wrong")[0] == 400
    for user, password in [("u09", "pw-u09"), ("u09", "wrong"), ("nobody", "wrong")]:
        status, body = _login_from(server.url, "192.0.2.77", user, password)
        assert status == 429
        limited.append(body)
    assert len({re.sub(rb"\d+", b"N", body) for body in limited}) == 1
    assert _login_from(server.url, "192.0.2.77", "u08", "pw-u08")[0] == 200  # others log in


def test_file_routes_refuse_path_traversal_after_login(server) -> None:
    cookie = login_cookie(server.url, "u00", "pw-u00")
    assert _get(server.url + "/config", cookie)[0] == 200  # the cookie works
    for path in ["/gradio_api/file=/etc/passwd", "/gradio_api/file=../../../../etc/passwd",
                 "/gradio_api/file=%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                 f"/gradio_api/file={server.db}",
                 "/gradio_api/file=" + str(Path.home())]:  # fmt: skip
        status, body = _get(server.url + path, cookie)
        assert status != 200 and b"root:" not in body and b"SQLite format" not in body, path


def test_identity_comes_from_the_session(db_server) -> None:
    server = db_server
    a = Client(server.url, auth=("u00", "pw-u00"), verbose=False)
    b = Client(server.url, auth=("u01", "pw-u01"), verbose=False)
    pair = a.predict(api_name="/next_pair")
    vid = uuid.uuid4().hex
    ack = a.predict(vid, pair["pair_id"], "left", pair["left_image"], 700, api_name="/vote")
    assert ack["annotator"] == "u00" and ack["status"] == "stored"
    assert ack["next"]["pair_id"] != pair["pair_id"]  # the reply carries the next pair
    # a retry repeats the vote (a vote id sent for another vote is a conflict: review 8)
    again = a.predict(vid, pair["pair_id"], "left", pair["left_image"], 700, api_name="/vote")
    assert again["status"] == "duplicate"
    with pytest.raises(Exception, match="another annotator"):  # b cannot replay a's vote id
        b.predict(vid, pair["pair_id"], "right", 0, 700, api_name="/vote")
    assert vid not in {v["vote_id"] for v in b.predict(api_name="/my_votes")}
    assert vid in {v["vote_id"] for v in a.predict(api_name="/my_votes")}
    assert b.predict(api_name="/undo")["pair_id"] is None  # b's undo never touches a's vote
    assert vid in {v["vote_id"] for v in a.predict(api_name="/my_votes")}
    with pytest.raises(Exception, match="admin only"):
        a.predict(api_name="/admin_stats")
    boss = Client(server.url, auth=("boss", "pw-boss"), verbose=False)
    stats = boss.predict(api_name="/admin_stats")
    assert stats["votes"] >= 1 and "u00" in {r["annotator"] for r in stats["annotators"]}
    assert a.predict(api_name="/undo")["pair_id"] == pair["pair_id"]


def _fast_vote(url: str, cookie: str, body: dict, **headers: str) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/label_api/vote", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Cookie": cookie,
                                          **headers}, method="POST")  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_fast_vote_route_session_identity_idempotent_next_pair(db_server) -> None:
    server = db_server
    a, b = login_cookie(server.url, "u00", "pw-u00"), login_cookie(server.url, "u01", "pw-u01")
    status, raw = _get(server.url + "/label_api/next_pair", a)
    pair = json.loads(raw)
    assert status == 200 and pair["pair_id"] and pair["left_image"] in (0, 1)
    vid = uuid.uuid4().hex
    vote = {"vote_id": vid, "pair_id": pair["pair_id"], "choice": "right",
            "left_image": pair["left_image"], "decide_ms": 900}  # fmt: skip
    # a name in the body is ignored: the vote is u00's, whose cookie sent it
    status, ack = _fast_vote(server.url, a, {**vote, "annotator": "u01"})
    assert status == 200 and ack["status"] == "stored" and ack["annotator"] == "u00"
    assert ack["next"]["pair_id"] not in ("", pair["pair_id"])  # the next pair, not this one
    status, again = _fast_vote(server.url, a, vote)  # a retry is stored once
    assert status == 200 and again["status"] == "duplicate"
    status, err = _fast_vote(server.url, b, {**vote, "choice": "left"})  # u01 replays the id
    assert status == 400 and "another annotator" in err["error"]
    status, err = _fast_vote(server.url, a, {**vote, "vote_id": uuid.uuid4().hex},
                             Origin="http://evil.example")  # fmt: skip
    assert status == 403
    status, err = _fast_vote(server.url, a, {**vote, "vote_id": uuid.uuid4().hex,
                                             "choice": "maybe"})  # fmt: skip
    assert status == 400 and "choice" in err["error"]
    store = Store(server.db)
    mine = [v for v in store.votes_of("u00") if v["vote_id"] == vid]
    assert [(v["choice"], v["decide_ms"]) for v in mine] == [("right", 900)]
    assert not store.votes_of("u01")
    store.close()
    client = Client(server.url, auth=("u00", "pw-u00"), verbose=False)
    assert client.predict(api_name="/undo")["pair_id"] == pair["pair_id"]


def _annotate(url: str, user: str, n: int, acked: dict, errors: list, stop: threading.Event):
    """One annotator: next pair, vote, every 5th vote sent twice (a retry)."""
    try:
        client = Client(url, auth=(user, f"pw-{user}"), verbose=False)
        mine = acked.setdefault(user, [])
        for i in range(n):
            if stop.is_set():
                return
            pair = client.predict(api_name="/next_pair")
            if not pair:
                return
            vid = uuid.uuid4().hex
            choice = ("left", "right", "tie", "skip")[i % 4]
            for _ in range(2 if i % 5 == 0 else 1):
                ack = client.predict(vid, pair["pair_id"], choice, pair["left_image"], 100 + i,
                                     api_name="/vote")  # fmt: skip
                if ack["annotator"] != user or ack["vote_id"] != vid:
                    errors.append(f"{user}: ack for {ack}")
            mine.append((vid, pair["pair_id"], choice))
    except Exception as err:  # after a kill, clients fail: the test decides what is expected
        if not stop.is_set():
            errors.append(f"{user}: {type(err).__name__}: {err}")


def _run_annotators(url: str, users: list[str], n: int, stop: threading.Event) -> tuple:
    acked: dict[str, list] = {}
    errors: list[str] = []
    threads = [threading.Thread(target=_annotate, args=(url, u, n, acked, errors, stop))
               for u in users]  # fmt: skip
    for t in threads:
        t.start()
    return threads, acked, errors


def _check_stored(db: Path | str, acked: dict) -> int:
    store = Store(db)
    rows = store.all_votes()
    by_id = {r["vote_id"]: r for r in rows}
    assert len(by_id) == len(rows)  # vote ids are unique
    count = 0
    for user, votes in acked.items():
        for vid, pair_id, choice in votes:
            row = by_id.get(vid)
            assert row is not None, f"acknowledged vote {vid} of {user} is missing"
            assert (row["annotator"], row["pair_id"], row["choice"]) == (user, pair_id, choice)
            count += 1
    store.close()
    return count


@pytest.mark.slow  # 8 annotators x 12 votes through gradio_client: about 15 s
def test_concurrent_annotators_every_vote_stored_once(db_server) -> None:
    server = db_server
    users = [f"u{k:02d}" for k in range(2, N_USERS)]
    stop = threading.Event()
    threads, acked, errors = _run_annotators(server.url, users, N_VOTES, stop)
    for t in threads:
        t.join(timeout=240)
    assert not errors, errors[:5]
    assert all(len(acked[u]) == N_VOTES for u in users)
    assert _check_stored(server.db, acked) == len(users) * N_VOTES
    store = Store(server.db)
    for u in users:  # nothing beyond what each annotator was acknowledged for
        assert len(store.votes_of(u)) == N_VOTES


# The full size takes 1-1.5 min per backend on 2 CPU cores: `make test-acceptance` runs it,
# `make test` a fifth of it (the same 32 concurrent annotators, kill, restart and resends).
FULL_SIZE = os.environ.get("MMALIGN_ACCEPTANCE") == "1"
TEAM, TEAM_VOTES, KILL_AFTER = (32, 200, 2000) if FULL_SIZE else (32, 40, 400)


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> dict:
    """TEAM annotators and TEAM_VOTES pairs (every annotator votes on every pair: overlap 32)."""
    root = tmp_path_factory.mktemp("team")
    users = root / "users.txt"
    for k in range(TEAM):
        add_user(users, f"t{k:02d}", f"pw-t{k:02d}")
    data = make_pairs_dataset(root / "pairs", TEAM_VOTES, size=16, seed=1)
    return {"root": root, "users": users, "data": data}


def _team_member(user: str, where: dict, up: threading.Event, acked: list, errors: list) -> None:
    """One annotator voting back to back over the fast route until TEAM_VOTES are
    acknowledged. When the server is gone it waits for it to be back, logs in again and
    resends the vote it had in flight with the same vote id (stored or duplicate)."""
    rng = random.Random(user)
    http: httpx.Client | None = None
    pair: dict | None = None
    pending: dict | None = None
    cut = False  # the pending vote was sent before the kill and is being resent
    try:
        while len(acked) < TEAM_VOTES:
            try:
                if http is None:
                    # each annotator from an address of its own (the per-address login
                    # limit would take 32 logins at once from one address for an attack)
                    address = {"X-Forwarded-For": f"203.0.113.{int(user[1:]) + 1}"}
                    http = httpx.Client(base_url=where["url"], timeout=60, headers=address)
                    login = {"username": user, "password": f"pw-{user}"}
                    http.post("/login", data=login).raise_for_status()
                    if pending is None:
                        pair = http.get("/label_api/next_pair").raise_for_status().json()
                if pending is None:
                    assert pair, f"{user}: queue empty after {len(acked)} votes"
                    choice = rng.choice(("left", "right", "tie", "skip"))
                    pending = {"vote_id": uuid.uuid4().hex, "pair_id": pair["pair_id"],
                               "choice": choice, "left_image": pair["left_image"],
                               "decide_ms": 100}  # fmt: skip
                r = http.post("/label_api/vote", json=pending)
                ack = r.raise_for_status().json()
                assert (ack["annotator"], ack["vote_id"]) == (user, pending["vote_id"]), ack
                status = ("resent " if cut else "") + ack["status"]
                acked.append((pending["vote_id"], pending["pair_id"], pending["choice"], status))
                pending, pair, cut = None, ack["next"], False
            except httpx.TransportError:  # the server was killed: wait, log in, resend
                cut = cut or pending is not None
                if http is not None:
                    http.close()
                http = None
                if not up.wait(timeout=180):
                    raise TimeoutError("the server did not come back") from None
    except Exception as err:
        errors.append(f"{user}: {type(err).__name__}: {err}")
    finally:
        if http is not None:
            http.close()


@pytest.mark.slow  # a kill and a restart; 6400 votes at full size, 1280 in `make test`
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_32_annotators_sigkill_and_restart_lose_and_duplicate_nothing(
    request, team, backend: str
) -> None:
    db, db_args = _database(request, team["root"], backend, f"killed_{backend}")
    common = ["--users", str(team["users"]), *db_args]
    log = team["root"] / f"killed-{backend}.log"
    server = Server(["--data", str(team["data"]), *common, "--overlap", str(TEAM)], log=log)
    where = {"url": server.wait().url}
    up = threading.Event()
    up.set()
    users = [f"t{k:02d}" for k in range(TEAM)]
    acked: dict[str, list] = {u: [] for u in users}
    errors: list[str] = []
    threads = [threading.Thread(target=_team_member, args=(u, where, up, acked[u], errors))
               for u in users]  # fmt: skip
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 240
        while sum(map(len, acked.values())) < KILL_AFTER and time.monotonic() < deadline:
            time.sleep(0.01)
        up.clear()
        server.kill()  # SIGKILL mid-run: no shutdown hooks, votes in flight
        killed_at = sum(map(len, acked.values()))
        assert killed_at >= KILL_AFTER, f"only {killed_at} votes in 240 s"
        server = Server(common, log=log)  # restart on the same database
        where["url"] = server.wait().url
        up.set()
        for t in threads:
            t.join(timeout=400)
    finally:
        up.set()
        server.kill()
    assert not [t.name for t in threads if t.is_alive()], "annotators still running"
    assert not errors, errors[:5]
    assert killed_at < TEAM * TEAM_VOTES  # the kill came mid-run
    statuses = Counter(status for user in users for *_, status in acked[user])
    # votes in flight at the kill were resent with their ids: each stored once, whether the
    # first send had committed ("resent duplicate") or not ("resent stored")
    assert statuses["resent stored"] + statuses["resent duplicate"] >= 1, statuses
    sent = {
        vid: (user, pair_id, choice) for user in users for vid, pair_id, choice, _ in acked[user]
    }
    assert len(sent) == TEAM * TEAM_VOTES  # every annotator got all 200 acknowledged
    store = Store(db)
    rows = store.all_votes()
    store.close()
    counts = Counter(r["vote_id"] for r in rows)
    assert counts and max(counts.values()) == 1  # nothing stored twice
    assert set(counts) == set(sent)  # nothing lost, nothing the annotators did not send
    assert all((r["annotator"], r["pair_id"], r["choice"]) == sent[r["vote_id"]] for r in rows)
    per_pair = Counter(r["pair_id"] for r in rows if r["choice"] != "skip")
    assert max(per_pair.values()) <= TEAM  # the overlap held across the restart


def test_cli_adduser_and_export(world, db_server, tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    cmd = [sys.executable, "-m", "mmalign.cli", "label", "adduser", "zed", "--users", str(users),
           "--password-stdin", "--role", "admin"]  # fmt: skip
    out = subprocess.run(cmd, input="s3cret-pw\n", capture_output=True, text=True, check=True)
    assert "zed (admin)" in out.stdout and "s3cret-pw" not in users.read_text()
    cmd = [sys.executable, "-m", "mmalign.cli", "label", "export", *db_server.db_args,
           "--out", str(tmp_path / "export"), "--format", "pairs"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert '"rows"' in out.stdout


def test_component_server_route_is_closed_even_signed_in(server) -> None:
    """No component of the app has a server function, and a multipart body there would pass
    the guard's session check (it reads JSON bodies): closed for everyone."""
    cookie = login_cookie(server.url, "u00", "pw-u00")
    body = b'{"session_hash": "abc", "component_id": 1, "fn_name": "x", "data": null}'
    for path in ("/gradio_api/component_server", "/gradio_api/component_server/"):
        status, answer = _post(server.url + path, body, cookie)
        # the guard's own answer, not Gradio's (which also says 404 for an unknown component)
        assert (status, json.loads(answer)) == (404, {"detail": "Not found"}), (status, answer)
