"""The labeling app's parts without a server: store, users, images, statistics, export."""

from __future__ import annotations

import io
import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest
from mmalign_label.export import export_votes
from mmalign_label.images import ImageError, check_bytes, import_pairs, load_image, resolve
from mmalign_label.pseudonyms import Pseudonyms
from mmalign_label.stats import cohen_kappa, fleiss_kappa, preferred, summarize
from mmalign_label.store import Pair, Store, VoteError
from mmalign_label.testing import make_pairs_dataset
from mmalign_label.users import Authenticator, add_user, check_password, hash_password, load_users
from PIL import Image


def _png(size: int = 8, color: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def store(label_db: str) -> Store:
    s = Store(label_db, overlap=2)
    s.add_pairs(Pair(f"p{i}", f"prompt {i}", f"a{i}.png", f"b{i}.png", "test") for i in range(6))
    return s


def _vote(store: Store, user: str, pair: str, choice: str = "left", vid: str | None = None):
    return store.record_vote(vote_id=vid or uuid.uuid4().hex, annotator=user, pair_id=pair,
                             choice=choice, left_image=0, decide_ms=500)  # fmt: skip


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = Store(tmp_path / "labels.sqlite")
    with store.write.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar()) >= 1000


def test_retried_vote_is_stored_once(store: Store) -> None:
    vid = uuid.uuid4().hex
    assert _vote(store, "ann", "p0", vid=vid).status == "stored"
    assert _vote(store, "ann", "p0", vid=vid).status == "duplicate"
    assert len(store.votes_of("ann")) == 1


def test_vote_id_of_another_annotator_is_refused(store: Store) -> None:
    vid = uuid.uuid4().hex
    _vote(store, "ann", "p0", vid=vid)
    with pytest.raises(VoteError, match="another annotator"):
        _vote(store, "eve", "p0", vid=vid)
    assert store.votes_of("eve") == [] and store.votes_of("ann")[0]["annotator"] == "ann"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pair_id": "nope"}, "unknown pair"),
        ({"choice": "both"}, "choice must be"),
        ({"vote_id": "x"}, "vote_id"),
        ({"vote_id": "../../etc/passwd"}, "vote_id"),
        ({"left_image": 2}, "left_image"),
    ],
)
def test_bad_votes_are_refused(store: Store, kwargs: dict, match: str) -> None:
    args = {"vote_id": uuid.uuid4().hex, "annotator": "ann", "pair_id": "p0", "choice": "left",
            "left_image": 0, "decide_ms": 1} | kwargs  # fmt: skip
    with pytest.raises(VoteError, match=match):
        store.record_vote(**args)


def test_queue_overlap_progress_and_undo(store: Store) -> None:
    # overlap=2: a pair leaves the queue after two non-skip votes
    for user in ("a", "b"):
        _vote(store, user, "p0")
    assert store.next_pair("c") is not None and store.next_pair("c").pair_id != "p0"
    assert store.progress("c") == (0, 5)
    with pytest.raises(VoteError, match="already voted"):
        _vote(store, "a", "p0")
    # a skip does not count towards the overlap but is done for its annotator
    _vote(store, "a", "p1", "skip")
    assert store.progress("a") == (2, 6)
    assert store.undo_last("a") == "p1"
    assert store.undo_last("a") == "p0"
    assert store.undo_last("a") is None
    assert store.progress("a") == (0, 6)
    assert store.progress("c") == (0, 6)  # p0 is open again: only b's vote is left on it
    assert len(store.votes_of("a", include_undone=True)) == 2
    _vote(store, "a", "p0", "right")  # after an undo the pair can be voted again
    assert [v["choice"] for v in store.votes_of("a")] == ["right"]


def test_queue_walks_every_pair_once(store: Store) -> None:
    seen = []
    while (pair := store.next_pair("solo")) is not None:
        seen.append(pair.pair_id)
        _vote(store, "solo", pair.pair_id)
    assert sorted(seen) == [f"p{i}" for i in range(6)]


def test_concurrent_writers_store_every_vote_once(label_db: str) -> None:
    s = Store(label_db, overlap=16)
    s.add_pairs(Pair(f"p{i}", "x", "a", "b", "t") for i in range(30))
    acked: dict[str, list[str]] = {}
    errors: list[str] = []  # an assert in a thread only warns: the main thread checks these

    def annotate(user: str) -> None:
        try:
            other = Store(label_db)  # each thread its own engine, like a worker
            mine = acked.setdefault(user, [])
            for i in range(30):
                vid = f"{user}-{i:04d}-{uuid.uuid4().hex[:8]}"
                for _ in range(2):  # every vote sent twice: the retry must not add a row
                    ack = _vote(other, user, f"p{i}", vid=vid)
                    if ack.annotator != user or ack.vote_id != vid:
                        errors.append(f"{user}: vote {vid} acknowledged as {ack}")
                mine.append(vid)
            other.close()
        except Exception as err:
            errors.append(f"{user}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=annotate, args=(f"u{k}",)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not [t.name for t in threads if t.is_alive()], "writers still running after 120 s"
    assert not errors, errors[:5]
    assert set(acked) == {f"u{k}" for k in range(16)}
    rows = s.all_votes()
    assert len(rows) == 16 * 30
    assert Counter(r["vote_id"] for r in rows).most_common(1)[0][1] == 1
    for user, ids in acked.items():
        assert sorted(v["vote_id"] for v in s.votes_of(user)) == sorted(ids)


def _run_threads(target, args: list[tuple]) -> None:
    threads = [threading.Thread(target=target, args=a) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not [t.name for t in threads if t.is_alive()], "threads still running after 240 s"


def _counted(s: Store) -> tuple[Counter, dict[str, int]]:
    """(non-skip votes per pair from the log, the pairs' n_votes column)."""
    from mmalign_label.tables import pairs

    cast = Counter(r["pair_id"] for r in s.all_votes() if r["choice"] != "skip")
    with s.read.begin() as conn:
        column = dict(
            conn.execute(pairs.select().with_only_columns(pairs.c.pair_id, pairs.c.n_votes)).all()
        )
    return cast, column  # fmt: skip


def test_overlap_holds_for_32_annotators_draining_their_queues(label_db: str) -> None:
    # the run: 32 annotators voting until their queues are empty on 100 pairs
    # stored 622 votes with --overlap 2; each thread has its own engine (a server each), so
    # only the database transaction can keep the count
    db = label_db
    s = Store(db, overlap=2)
    s.add_pairs(Pair(f"p{i:03d}", "x", "a", "b", "t") for i in range(100))
    errors: list[str] = []

    def annotate(user: str) -> None:
        mine = Store(db)
        try:
            for i in range(200):
                pair = mine.next_pair(user)
                if pair is None:
                    return
                # within its lease a handed-out pair always has a place: no VoteError
                _vote(mine, user, pair.pair_id, ("left", "right", "tie")[i % 3])
        except Exception as err:
            errors.append(f"{user}: {type(err).__name__}: {err}")
        finally:
            mine.close()

    _run_threads(annotate, [(f"u{k:02d}",) for k in range(32)])
    assert not errors, errors[:5]
    cast, column = _counted(s)
    assert max(cast.values()) <= 2, cast.most_common(3)
    assert cast == Counter({f"p{i:03d}": 2 for i in range(100)})  # and every pair got its 2
    assert column == dict(cast)


def test_racing_votes_on_one_pair_store_at_most_overlap(label_db: str) -> None:
    # 32 annotators vote on the same pair at once without asking next_pair (API scripts can)
    db = label_db
    s = Store(db, overlap=2)
    s.add_pairs([Pair("p0", "x", "a", "b", "t")])
    start = threading.Barrier(32)
    outcomes: list[str] = []

    def vote(user: str) -> None:
        mine = Store(db)
        start.wait()
        try:
            outcomes.append(_vote(mine, user, "p0").status)
        except VoteError as err:
            outcomes.append("full" if "already has its 2" in str(err) else str(err))
        finally:
            mine.close()

    _run_threads(vote, [(f"u{k:02d}",) for k in range(32)])
    assert Counter(outcomes) == Counter({"stored": 2, "full": 30})
    assert _counted(s) == (Counter({"p0": 2}), {"p0": 2})
    _vote(s, "late", "p0", "skip")  # a skip takes no place: still accepted


def test_racing_retries_of_one_vote_store_it_once(label_db: str) -> None:
    # a client that resends a vote whose answer it lost, while the first send is still in
    # its transaction: on PostgreSQL the id lookup must come after the pair's lock, or the
    # retry sees the annotator's vote on the pair but not its id ("already voted")
    db = label_db
    s = Store(db, overlap=2)
    s.add_pairs(Pair(f"p{i}", "x", "a", "b", "t") for i in range(8))
    outcomes: list[str] = []

    def send(pair: str, vid: str, start: threading.Barrier) -> None:
        mine = Store(db)
        start.wait()
        try:
            outcomes.append(_vote(mine, "ann", pair, vid=vid).status)
        except VoteError as err:
            outcomes.append(f"refused: {err}")
        finally:
            mine.close()

    for i in range(8):
        start = threading.Barrier(6, timeout=60)
        _run_threads(send, [(f"p{i}", f"retry-{i:04d}", start)] * 6)
    assert Counter(outcomes) == Counter({"stored": 8, "duplicate": 40}), Counter(outcomes)
    assert sorted(v["vote_id"] for v in s.votes_of("ann")) == [f"retry-{i:04d}" for i in range(8)]
    assert _counted(s) == (Counter({f"p{i}": 1 for i in range(8)}), {f"p{i}": 1 for i in range(8)})


def test_racing_undos_of_one_annotator_undo_each_vote_once(label_db: str) -> None:
    # two tabs of one annotator pressing undo at once: each vote is undone once and the
    # pairs' vote counts stay equal to the votes in the log
    db = label_db
    s = Store(db, overlap=2)
    s.add_pairs(Pair(f"p{i}", "x", "a", "b", "t") for i in range(12))
    for i in range(12):
        _vote(s, "ann", f"p{i}")
    undone: list[str | None] = []
    start = threading.Barrier(8, timeout=60)

    def undo() -> None:
        mine = Store(db)
        start.wait()
        try:
            undone.append(mine.undo_last("ann"))
        finally:
            mine.close()

    _run_threads(undo, [()] * 8)
    assert sorted(u for u in undone if u) == sorted(f"p{i}" for i in range(4, 12))
    assert [v["pair_id"] for v in s.votes_of("ann")] == [f"p{i}" for i in range(4)]
    cast, column = _counted(s)
    assert column == {f"p{i}": int(i < 4) for i in range(12)} and sum(cast.values()) == 4


def test_many_servers_starting_on_a_new_database_at_once(label_db: str) -> None:
    # every server creates the tables and writes its settings on start: 8 at once on an
    # empty database, then 8 importing the same pairs at once, add each pair once
    start = threading.Barrier(8, timeout=60)
    stores: list[Store] = []
    errors: list[str] = []
    added: list[int] = []

    def open_and_import() -> None:
        try:
            start.wait()
            mine = Store(label_db, overlap=3)
            stores.append(mine)
            start.wait()
            added.append(mine.add_pairs(Pair(f"p{i}", "x", "a", "b", "t") for i in range(20)))
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")
            start.abort()  # the others stop waiting for this one

    _run_threads(open_and_import, [()] * 8)
    assert not errors, errors[:3]
    assert sum(added) == 20 and stores[0].count_pairs() == 20 and stores[0].overlap == 3
    for s in stores:
        s.close()


def test_a_handed_out_pair_is_reserved_until_its_lease_expires(label_db: str) -> None:
    now = [1000.0]
    s = Store(label_db, overlap=1, lease_s=60, clock=lambda: now[0])
    s.add_pairs(Pair(f"p{i}", "x", "a", "b", "t") for i in range(2))
    held = s.next_pair("a")
    assert held is not None and s.next_pair("a") == held  # asked again: the same pair
    other = s.next_pair("b")
    assert other is not None and other != held  # reserved for a, not handed to b
    assert s.next_pair("c") is None  # both pairs reserved, none voted yet
    with pytest.raises(VoteError, match="reserved"):
        _vote(s, "c", held.pair_id)
    now[0] += 61  # the leases expired: c takes a's place, a's late vote finds the pair full
    _vote(s, "c", held.pair_id)
    with pytest.raises(VoteError, match="already has its 1"):
        _vote(s, "a", held.pair_id)
    assert s.undo_last("c") == held.pair_id  # undo leases the pair back to c
    assert s.next_pair("a") == other and s.next_pair("c") == held
    _vote(s, "c", held.pair_id, "skip")  # a skip gives the place back
    assert s.next_pair("d") == held


def test_an_unreachable_postgresql_url_stops_the_app_at_start(tmp_path: Path, postgres) -> None:
    import subprocess
    import sys

    from mmalign_label.engines import DatabaseError
    from mmalign_label.testing import free_port
    from mmalign_label.users import add_user

    port = free_port()  # nothing listens there
    url = f"postgresql://label:s3cret@127.0.0.1:{port}/labels"
    with pytest.raises(DatabaseError, match=f"cannot connect to the database .*127.0.0.1:{port}"):
        Store(url)
    with pytest.raises(DatabaseError, match='database "nope" does not exist'):
        Store(postgres.url_for("nope"))
    users = tmp_path / "users.txt"
    add_user(users, "ann", "pw")
    cmd = [sys.executable, "-m", "mmalign.cli", "label", "--db", url, "--images",
           str(tmp_path / "img"), "--users", str(users), "--port", str(free_port())]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "cannot connect to the database" in out.stderr and "Traceback" not in out.stderr
    assert "s3cret" not in out.stderr + out.stdout and "label: http" not in out.stdout


# ------------------------------------------------------------------------- users


def test_passwords_are_salted_scrypt_hashes(tmp_path: Path) -> None:
    h1, h2 = hash_password("secret"), hash_password("secret")
    assert h1 != h2 and h1.startswith("scrypt$") and "secret" not in h1
    assert check_password("secret", h1) and not check_password("Secret", h1)
    path = tmp_path / "users.txt"
    add_user(path, "ann", "pw1")
    add_user(path, "boss", "pw2", "admin")
    add_user(path, "ann", "pw3")  # reset a password
    assert set(load_users(path)) == {"ann", "boss"}
    auth = Authenticator(path)
    assert auth("ann", "pw3") and not auth("ann", "pw1") and not auth("nobody", "pw3")
    assert auth.role("boss") == "admin" and auth.role("ann") == "annotator"
    with pytest.raises(ValueError, match="user name"):
        add_user(path, "a:b", "pw")
    with pytest.raises(ValueError, match="empty"):
        add_user(path, "c", "")


# ------------------------------------------------------------------------ images


def test_image_references_cannot_leave_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    (root / "ok.png").write_bytes(_png())
    (tmp_path / "secret.png").write_bytes(_png())
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    assert resolve(root, "ok.png") == (root / "ok.png").resolve()
    assert load_image(root, "ok.png").size == (8, 8)
    for ref in ("../secret.png", "/etc/passwd", str(tmp_path / "secret.png"), "a/../../secret.png",
                "link.png", "", "ok.png\x00"):  # fmt: skip
        with pytest.raises(ImageError):
            load_image(root, ref)


def test_oversized_and_undecodable_images_get_clear_errors(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ImageError, match="cannot decode"):
        check_bytes(b"not an image at all", "row 3 column 'chosen'")
    with pytest.raises(ImageError, match="cannot decode"):
        check_bytes(_png(64)[:60], "truncated")
    import mmalign_label.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 32 * 32)
    with pytest.raises(ImageError, match="64x64 pixels is over the limit"):
        check_bytes(_png(64), "big")
    monkeypatch.setattr(images, "MAX_BYTES", 10)
    with pytest.raises(ImageError, match="MiB limit"):
        check_bytes(_png(8), "heavy")


def test_import_a_preference_pair_dataset(tmp_path: Path, label_db: str) -> None:
    data = make_pairs_dataset(tmp_path / "pairs", 5, size=16)
    pairs = list(import_pairs(data, tmp_path / "img"))
    assert len(pairs) == 5 and all(p.prompt.startswith("a ") for p in pairs)
    assert all((tmp_path / "img" / p.image_0).is_file() for p in pairs)
    s = Store(label_db)
    assert s.add_pairs(pairs) == 5 and s.add_pairs(pairs) == 0  # a re-import adds nothing
    # the folder above it (what `mmalign toy data --out DIR` writes: DIR/pairs) reads the same
    above = list(import_pairs(tmp_path, tmp_path / "img2"))
    assert [p.pair_id for p in above] == [p.pair_id for p in pairs]


def test_import_stops_on_an_undecodable_image(tmp_path: Path) -> None:
    from mmalign.data.pickapic import write_pickapic

    rows = [{"prompt": "p", "chosen": _png(), "rejected": b"\x89PNG broken"}]
    write_pickapic(rows, tmp_path / "pap", "train", seed=1)
    with pytest.raises(ImageError, match=r"undecodable images in Pick-a-Pic rows \[0\]"):
        list(import_pairs(tmp_path / "pap", tmp_path / "img", split="train"))


# ------------------------------------------------------------------------- stats


def test_cohen_kappa_matches_a_hand_computed_value() -> None:
    a = ["x", "x", "y", "y", "x", "y", "x", "x"]
    b = ["x", "y", "y", "y", "x", "x", "x", "x"]
    # p_o = 6/8; p_e = (5*5 + 3*3)/64 = 34/64 -> kappa = (48 - 34) / (64 - 34) = 14/30
    assert cohen_kappa(a, b) == pytest.approx(14 / 30)
    assert cohen_kappa(["x", "y"], ["x", "y"]) == pytest.approx(1.0)


def test_fleiss_kappa_matches_the_textbook_example() -> None:
    # Wikipedia's worked example (10 items, 14 raters, 5 categories): kappa = 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0],
             [2, 2, 8, 1, 1], [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2],
             [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]  # fmt: skip
    items = [{str(j): n for j, n in enumerate(row) if n} for row in table]
    assert fleiss_kappa(items) == pytest.approx(0.2099, abs=1e-3)


def test_summary_reads_preferences_through_the_left_right_order() -> None:
    assert preferred("left", 1) == "image_1" and preferred("right", 1) == "image_0"
    votes = [
        {"annotator": "a", "pair_id": "p1", "choice": "left", "left_image": 0, "decide_ms": 1000},
        {"annotator": "b", "pair_id": "p1", "choice": "right", "left_image": 1, "decide_ms": 3000},
        {"annotator": "a", "pair_id": "p2", "choice": "tie", "left_image": 0, "decide_ms": 2000},
        {"annotator": "b", "pair_id": "p2", "choice": "tie", "left_image": 1, "decide_ms": 2000},
    ]
    s = summarize(votes)
    assert s["cohen"][0]["cohen_kappa"] == pytest.approx(1.0)
    assert s["fleiss_kappa"] == pytest.approx(1.0)
    assert s["left_share"] == pytest.approx(0.5) and s["median_s"] == pytest.approx(2.0)
    assert [a["votes"] for a in s["annotators"]] == [2, 2]


# ------------------------------------------------------------------------ export


def test_export_holds_exactly_the_votes_cast(tmp_path: Path, label_db: str) -> None:
    from mmalign.data.pickapic import load_pickapic
    from mmalign.data.schema import load_pairs

    root = tmp_path / "img"
    data = make_pairs_dataset(tmp_path / "pairs", 4, size=16)
    s = Store(label_db, overlap=3)
    pairs = list(import_pairs(data, root))
    s.add_pairs(pairs)
    p = [x.pair_id for x in pairs]
    s.record_vote(vote_id="v-left-0001", annotator="a", pair_id=p[0], choice="left",
                  left_image=1, decide_ms=10)  # fmt: skip
    s.record_vote(vote_id="v-tie-00001", annotator="b", pair_id=p[1], choice="tie",
                  left_image=0, decide_ms=10)  # fmt: skip
    s.record_vote(vote_id="v-skip-0001", annotator="a", pair_id=p[2], choice="skip",
                  left_image=0, decide_ms=10)  # fmt: skip
    s.record_vote(vote_id="v-undone-01", annotator="b", pair_id=p[3], choice="left",
                  left_image=0, decide_ms=10)  # fmt: skip
    s.undo_last("b")

    summary = export_votes(s, root, tmp_path / "out_pairs", "pairs")
    assert summary["rows"] == 2 and summary["skipped"] == {"skip": 1}
    ds = load_pairs(tmp_path / "out_pairs")
    assert sorted(ds["source"]) == ["label:v-left-0001", "label:v-tie-00001"]
    row = ds[ds["source"].index("label:v-left-0001")]
    # left_image=1 and "left": the annotator preferred image_1 of the pair
    chosen = Image.open(root / pairs[0].image_1).convert("RGB")
    assert row["chosen"].convert("RGB").tobytes() == chosen.tobytes()
    user_id = Pseudonyms(s)
    assert row["label"] == 1.0 and row["user_id"] == user_id("a")
    assert ds[ds["source"].index("label:v-tie-00001")]["label"] == 0.5

    export_votes(s, root, tmp_path / "out_pap", "pickapic")
    pap, report = load_pickapic(tmp_path / "out_pap", "train", tie_policy="half")
    assert len(pap) == 2 and report.num_skipped == 0
    assert sorted(pap["label"]) == [0.5, 1.0]
    assert sorted(pap["user_id"]) == sorted([user_id("a"), user_id("b")])


def test_export_user_ids_are_stable_pseudonyms(tmp_path: Path, label_db: str) -> None:
    from mmalign.data.pickapic import load_pickapic
    from mmalign.data.schema import load_pairs

    root = tmp_path / "img"
    pairs = list(import_pairs(make_pairs_dataset(tmp_path / "pairs", 3, size=16), root))
    s = Store(label_db, overlap=3)
    s.add_pairs(pairs)
    for k, user in enumerate(("ann", "bob", "ann")):
        s.record_vote(vote_id=f"vote-{k:05d}", annotator=user, pair_id=pairs[k].pair_id,
                      choice="left", left_image=0, decide_ms=10)  # fmt: skip

    def ids(out: str) -> dict[str, str]:  # vote id -> user_id in a PreferencePair export
        export_votes(s, root, tmp_path / out, "pairs")
        ds = load_pairs(tmp_path / out)
        return {src.removeprefix("label:"): u
                for src, u in zip(ds["source"], ds["user_id"], strict=True)}  # fmt: skip

    first = ids("a")
    assert first["vote-00000"] == first["vote-00002"] != first["vote-00001"]  # per annotator
    assert not {"ann", "bob"} & set(first.values())  # not the login names
    assert all(len(u) == 17 and u.startswith("u") for u in first.values())
    s.close()
    again = Store(label_db)  # another export later, by another process: the same ids
    assert ids("b") == first
    export_votes(again, root, tmp_path / "c", "pickapic")  # Pick-a-Pic's column agrees
    pap, _ = load_pickapic(tmp_path / "c", "train", tie_policy="half")
    assert Counter(pap["user_id"]) == Counter(first.values())
    other = Store(tmp_path / "other.sqlite")  # another database has its own key
    assert Pseudonyms(other)("ann") != first["vote-00000"] == Pseudonyms(again)("ann")


def test_vlm_export_user_ids_are_the_same_pseudonyms(tmp_path: Path) -> None:
    import json

    from datasets import load_from_disk
    from mmalign_label.vlm_pairs import add_vlm_pairs, read_vlm_pairs

    rows = []
    for i in range(2):
        Image.new("RGB", (16, 16), (40 * i, 0, 200)).save(tmp_path / f"im{i}.png")
        rows.append({"prompt": f"What colour? ({i})", "image": f"im{i}.png",
                     "response_0": f"Blue {i}.", "response_1": f"Red {i}."})  # fmt: skip
    (tmp_path / "v.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    s = Store(tmp_path / "vlm.sqlite", overlap=2, gold_rate=0.0)
    add_vlm_pairs(s, read_vlm_pairs(tmp_path / "v.jsonl", tmp_path / "img"))
    for k, user in enumerate(("ann", "bob")):
        pair = s.next_pair(user)
        assert pair is not None
        s.record_vote(vote_id=f"vlm-vote-{k}", annotator=user, pair_id=pair.pair_id,
                      choice="left", left_image=0, decide_ms=10)  # fmt: skip
    export_votes(s, tmp_path / "img", tmp_path / "out", "pairs")
    ds = load_from_disk(str(tmp_path / "out"))
    user_id = Pseudonyms(s)
    assert sorted(ds["user_id"]) == sorted([user_id("ann"), user_id("bob")])
    assert not {"ann", "bob"} & set(ds["user_id"])


@pytest.mark.slow  # loads toy-sd and samples two images: about 5 s on 2 CPU cores
def test_model_mode_generates_a_stored_pair_with_two_seeds(tmp_path: Path) -> None:
    pytest.importorskip("gradio")
    from mmalign_label.app import LabelApp

    users = tmp_path / "users.txt"
    add_user(users, "ann", "pw")
    s = Store(tmp_path / "db.sqlite")
    app = LabelApp(s, tmp_path / "img", Authenticator(users), model="toy-sd", steps=2)
    assert app.generator is not None
    pair = app.generator.generate("a red circle on a blue background")
    assert s.get_pair(pair.pair_id) == pair and pair.source.startswith("model:toy-sd:seeds")
    a, b = (load_image(tmp_path / "img", ref) for ref in (pair.image_0, pair.image_1))
    assert a.size == b.size and a.tobytes() != b.tobytes()  # two seeds, two images
    s.record_vote(vote_id="gen-vote-01", annotator="ann", pair_id=pair.pair_id, choice="right",
                  left_image=0, decide_ms=900)  # fmt: skip
    assert export_votes(s, tmp_path / "img", tmp_path / "out", "pairs")["rows"] == 1
