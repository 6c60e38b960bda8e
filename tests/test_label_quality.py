"""Criteria and ties, gold pairs, annotator quality (issue 18 items 2 and 3): no server."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import pytest
from mmalign_label.criteria import CriteriaError, load_criteria, save_criteria
from mmalign_label.export import export_votes
from mmalign_label.gold import GoldError, add_gold, gold_answers
from mmalign_label.images import import_pairs
from mmalign_label.labeling import Labeling
from mmalign_label.quality import (
    assess,
    krippendorff_alpha,
    majority_kappa,
    quality_table,
    team_quality,
)
from mmalign_label.store import Pair, Store, VoteError
from mmalign_label.testing import make_pairs_dataset

CRITERIA = """
criteria:
  - {name: overall, question: "Which image do you prefer overall?"}
  - {name: appeal, question: "Which image is more visually appealing?"}
  - {name: alignment, question: "Which image matches the prompt better?"}
label: overall
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def pin_gold_key(store: Store) -> None:
    """A fixed gold-draw key instead of the random one a database makes: the simulated teams
    below (and the table in docs/labeling.md) draw the same gold pairs on every run."""
    from mmalign_label import goldmix

    store.set_setting(goldmix.GOLD_KEY, "5e" * 32)


def _store_with_pairs(
    tmp_path: Path, n: int, *, overlap: int = 1, db: str | None = None, **kw
) -> tuple[Store, Path]:
    root = tmp_path / "img"
    store = Store(db or tmp_path / "labels.sqlite", overlap=overlap, **kw)
    pin_gold_key(store)
    store.add_pairs(import_pairs(make_pairs_dataset(tmp_path / "pairs", n, size=16), root))
    return store, root


# ------------------------------------------------------------------- criteria and ties


def test_criteria_file_unknown_keys_are_named_with_a_suggestion(tmp_path: Path) -> None:
    crit = load_criteria(_write(tmp_path / "c.yaml", CRITERIA))
    assert crit.names == ("overall", "appeal", "alignment") and crit.label == "overall"
    bad = CRITERIA.replace("label: overall", "lable: overall")
    with pytest.raises(CriteriaError, match="unknown key 'lable'; did you mean 'label'"):
        load_criteria(_write(tmp_path / "bad.yaml", bad))
    bad = CRITERIA.replace("{name: appeal, question:", "{name: appeal, questoin:")
    with pytest.raises(CriteriaError, match=r"criteria\[1\]: unknown key 'questoin'; did you"):
        load_criteria(_write(tmp_path / "bad2.yaml", bad))
    with pytest.raises(CriteriaError, match="label 'overal' is not a criterion; did you mean"):
        bad = CRITERIA.replace("label: overall", "label: overal")
        load_criteria(_write(tmp_path / "bad3.yaml", bad))
    with pytest.raises(CriteriaError, match="unknown criterion 'apeal'; did you mean 'appeal'"):
        crit.pick("apeal")


def _vote(lab: Labeling, user: str, pair: str, choice: str, answers=None, left: int = 0):
    return lab.vote(user, vote_id=uuid.uuid4().hex, pair_id=pair, choice=choice,
                    left_image=left, decide_ms=700, answers=answers)  # fmt: skip


def test_several_questions_ties_and_both_bad_export_by_criterion(
    tmp_path: Path, label_db: str
) -> None:
    from mmalign.data.schema import load_pairs

    store, root = _store_with_pairs(tmp_path, 4, db=label_db)
    save_criteria(store, load_criteria(_write(tmp_path / "c.yaml", CRITERIA)))
    lab = Labeling(store, seed=0)
    ids = [p.pair_id for p in _pairs(store)]
    with pytest.raises(VoteError, match="asks 3 questions"):
        _vote(lab, "ann", ids[0], "left")
    with pytest.raises(VoteError, match="unknown criterion 'apeal'"):
        _vote(lab, "ann", ids[0], "left", {"overall": "left", "apeal": "tie", "alignment": "left"})
    _vote(lab, "ann", ids[0], "left", {"overall": "left", "appeal": "tie", "alignment": "right"})
    _vote(lab, "ann", ids[1], "tie", {"overall": "tie", "appeal": "left", "alignment": "both_bad"})
    _vote(lab, "ann", ids[2], "both_bad", {"overall": "both_bad", "appeal": "right",
                                           "alignment": "left"})  # fmt: skip
    _vote(lab, "ann", ids[3], "skip")

    out = export_votes(store, root, tmp_path / "overall", "pickapic")
    assert out["rows"] == 2 and out["skipped"] == {"both_bad": 1, "skip": 1}
    assert out["criterion"] == "overall"
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "overall" / "train-00000-of-00001.parquet").to_pylist()
    labels = sorted((r["label_0"], r["label_1"]) for r in table)
    assert labels == [(0.5, 0.5), (1.0, 0.0)]  # the tie: 0.5 / 0.5 (Pick-a-Pic schema)
    tie = next(r for r in table if r["label_0"] == 0.5)
    assert tie["best_image_uid"] == ""

    out = export_votes(store, root, tmp_path / "appeal", "pairs", criterion="appeal")
    assert out["rows"] == 3 and out["skipped"] == {"skip": 1} and out["criterion"] == "appeal"
    assert sorted(load_pairs(tmp_path / "appeal")["label"]) == [0.5, 1.0, 1.0]
    out = export_votes(store, root, tmp_path / "align", "pairs", criterion="alignment")
    assert out["rows"] == 2 and out["skipped"] == {"skip": 1, "both_bad": 1}
    with pytest.raises(CriteriaError, match="did you mean 'alignment'"):
        export_votes(store, root, tmp_path / "x", "pairs", criterion="alignmnt")
    with pytest.raises(CriteriaError, match="already has votes"):
        save_criteria(
            store,
            load_criteria(
                _write(
                    tmp_path / "d.yaml",
                    CRITERIA.replace(
                        '  - {name: appeal, question: "Which image is more visually appealing?"}\n',
                        "",
                    ),
                )
            ),
        )


def _pairs(store: Store):
    from mmalign_label.tables import pairs

    with store.read.begin() as conn:
        return list(conn.execute(pairs.select().order_by(pairs.c.seq)))


def test_one_question_run_stores_both_bad_and_ties_as_choices(tmp_path: Path) -> None:
    store, root = _store_with_pairs(tmp_path, 3)
    lab = Labeling(store, seed=0)
    ids = [p.pair_id for p in _pairs(store)]
    for pair, choice in zip(ids, ("tie", "both_bad", "right"), strict=True):
        _vote(lab, "ann", pair, choice)
    assert [v["choice"] for v in store.votes_of("ann")] == ["tie", "both_bad", "right"]
    out = export_votes(store, root, tmp_path / "e", "pairs")
    assert out == {"rows": 2, "skipped": {"both_bad": 1}, "format": "pairs",
                   "out": str(tmp_path / "e")}  # fmt: skip


# ------------------------------------------------------------------------ statistics


def test_krippendorff_alpha_matches_hand_computed_and_published_values() -> None:
    # by hand: coincidences o_aa = 2, o_ab = o_ba = 1, o_bb = 2; n_a = n_b = 3, n = 6;
    # alpha = 1 - (n - 1) * (o_ab + o_ba) / (n_a n_b + n_b n_a) = 1 - 5 * 2 / 18 = 4/9
    assert krippendorff_alpha([["a", "a"], ["a", "b"], ["b", "b"]]) == pytest.approx(4 / 9)
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": binary data, two
    # observers, alpha = 0.095; nominal data, four observers with missing values, 0.743
    a, b = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert krippendorff_alpha([[x, y] for x, y in zip(a, b, strict=True)]) == pytest.approx(
        0.095, abs=5e-4
    )
    n = None
    coders = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    ]
    units = [[c[i] for c in coders if c[i] is not None] for i in range(12)]
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha([["a", "a"], ["a"]]) is None  # one category: undefined


def test_majority_kappa_by_hand() -> None:
    # x against the majority of y and z; pair 4's others tie (no majority), pair 5 has one other
    ratings = {
        "1": {"x": "image_0", "y": "image_0", "z": "image_0"},
        "2": {"x": "image_1", "y": "image_1", "z": "image_1"},
        "3": {"x": "image_0", "y": "image_1", "z": "image_1"},
        "4": {"x": "image_0", "y": "image_0", "z": "image_1"},
        "5": {"x": "image_1", "y": "image_1"},
        "6": {"x": "image_1", "y": "image_0", "z": "image_0"},
    }
    # items 1, 2, 3, 6: x = [0, 1, 0, 1], majority = [0, 1, 1, 0]; p_o = 1/2, p_e = 1/2 -> 0
    assert majority_kappa(ratings, "x") == (pytest.approx(0.0), 4)
    # y against x and z: they differ on 3, 4 and 6 (no majority), 5 has one other rater;
    # items 1, 2: y = [0, 1] = majority -> 1
    kappa, items = majority_kappa(ratings, "y")
    assert items == 2 and kappa == pytest.approx(1.0)


def _v(annotator: str, pair: str, choice: str, left: int = 0, ms: int = 1000) -> dict:
    return {"annotator": annotator, "pair_id": pair, "choice": choice, "left_image": left,
            "decide_ms": ms}  # fmt: skip


def test_assess_gold_accuracy_bias_time_and_flags() -> None:
    gold = {f"g{i}": "image_0" for i in range(6)}
    votes = [_v("ok", f"g{i}", "left" if i % 2 else "right", left=i % 2 ^ 1 ^ 1) for i in range(6)]
    # ok: left_image = i % 2, picks the side holding image_0 every time -> 6/6, left share 1/2
    votes = [_v("ok", f"g{i}", "left" if i % 2 == 0 else "right", left=0 if i % 2 == 0 else 1,
                ms=1000 * (i + 1)) for i in range(6)]  # fmt: skip
    votes += [_v("lefty", f"g{i}", "left", left=i % 2) for i in range(6)]  # 3/6, always left
    votes += [_v("lefty", f"r{i}", "left") for i in range(6)]
    q = assess(votes, gold, gold_floor=0.7, bias_ceiling=0.8, min_gold=5, min_sided=10)
    rows = {r["annotator"]: r for r in q["annotators"]}
    assert rows["ok"]["gold_accuracy"] == 1.0 and rows["ok"]["left_share"] == 0.5
    assert rows["ok"]["median_s"] == pytest.approx(3.5) and not rows["ok"]["flagged"]
    assert rows["lefty"]["gold_accuracy"] == 0.5 and rows["lefty"]["left_share"] == 1.0
    assert q["flagged"] == ["lefty"] and len(rows["lefty"]["reasons"]) == 2
    # below the minimum counts nobody is flagged
    q = assess(votes, gold, min_gold=7, min_sided=13)
    assert q["flagged"] == []


# ------------------------------------------------------------------------- gold pairs


def test_gold_file_with_a_bad_answer_names_the_row_and_imports_nothing(
    tmp_path: Path, label_db: str
) -> None:
    store, root = _store_with_pairs(tmp_path, 3, db=label_db)
    first = _pairs(store)[0].pair_id
    images = make_pairs_dataset(tmp_path / "g", 1, size=16)
    from mmalign.data.schema import load_pairs

    row = load_pairs(images)[0]
    for name in ("chosen", "rejected"):
        row[name].save(tmp_path / f"{name}.png")
    lines = [
        {"pair_id": first, "answer": "image_1"},
        {"prompt": "p", "image_0": "chosen.png", "image_1": "rejected.png", "answer": "tie"},
        {"pair_id": first, "answer": "image_2"},
    ]
    gold_file = _write(tmp_path / "gold.jsonl", "\n".join(json.dumps(r) for r in lines))
    with pytest.raises(GoldError, match=r"row 2: answer 'image_2' names no side of the pair; "
                       r"did you mean 'image_[01]'"):  # fmt: skip
        add_gold(store, gold_file, root)
    assert store.count_pairs() == 3 and gold_answers(store) == {}  # nothing half-imported
    with pytest.raises(GoldError, match="row 0: pair 'nope' is not in the database"):
        add_gold(store, _write(tmp_path / "g2.jsonl", '{"pair_id": "nope", "answer": "tie"}'),
                 root)  # fmt: skip
    gold_file = _write(tmp_path / "gold.jsonl", "\n".join(json.dumps(r) for r in lines[:2]))
    assert add_gold(store, gold_file, root) == {"rows": 2, "new_pairs": 1, "gold_pairs": 2}
    assert store.count_pairs() == 4 and sorted(gold_answers(store).values()) == ["image_1", "tie"]


def test_gold_pairs_reach_every_annotator_and_are_never_exported(
    tmp_path: Path, label_db: str
) -> None:
    store, root = _store_with_pairs(tmp_path, 20, overlap=1, gold_rate=0.3, db=label_db)
    add_gold(store, make_pairs_dataset(tmp_path / "gold", 8, size=16, seed=5), root)
    gold = gold_answers(store)
    lab = Labeling(store, seed=0)
    seen: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    active = list(seen)
    while active:  # the three take turns, as a team would
        for user in list(active):
            nxt = lab.next_for(user)
            if not nxt:
                active.remove(user)
                continue
            seen[user].append(nxt["pair_id"])
            _vote(lab, user, nxt["pair_id"], "left", left=nxt["left_image"])
    regular = [p for u in seen.values() for p in u if p not in gold]
    assert sorted(regular) == sorted(set(regular)) and len(regular) == 20  # overlap 1 holds
    on_gold = {u: [p for p in ps if p in gold] for u, ps in seen.items()}
    assert all(len(g) >= 2 and len(g) == len(set(g)) for g in on_gold.values()), on_gold
    assert set(on_gold["a"]) & set(on_gold["b"]) & set(on_gold["c"])  # gold has no overlap
    assert 0.15 < sum(map(len, on_gold.values())) / sum(map(len, seen.values())) < 0.45
    out = export_votes(store, root, tmp_path / "e", "pairs")
    n_gold = sum(len(v) for v in on_gold.values())
    assert out["rows"] == 20 and out["skipped"] == {"gold": n_gold}


def test_a_team_with_two_random_clickers_and_a_left_clicker(tmp_path: Path, label_db: str) -> None:
    """Issue 18's acceptance: 8 annotators, 2 click at random, 1 always clicks left; the
    three are flagged from gold accuracy and position bias alone, and leaving them out of
    the export raises its agreement with the true labels."""
    from mmalign.data.schema import load_pairs

    root = tmp_path / "img"
    store = Store(label_db, overlap=3, gold_rate=0.5)
    pin_gold_key(store)
    imported = import_pairs(make_pairs_dataset(tmp_path / "pairs", 160, size=16), root)
    # `chosen` comes first from the import: swap every other pair, so the true side varies
    pairs = [p if i % 2 else Pair(p.pair_id, p.prompt, p.image_1, p.image_0, p.source)
             for i, p in enumerate(imported)]  # fmt: skip
    true = {p.pair_id: (p.image_1 if i % 2 == 0 else p.image_0) for i, p in enumerate(pairs)}
    store.add_pairs(pairs)
    add_gold(store, make_pairs_dataset(tmp_path / "gold", 80, size=16, seed=7), root)
    true |= {p.pair_id: p.image_0 for p in _pairs(store) if p.pair_id not in true}
    lab = Labeling(store, seed=1)
    rng = random.Random(0)
    team = {f"good{i}": "good" for i in range(5)} | {"rand0": "random", "rand1": "random",
                                                       "lefty": "left"}  # fmt: skip

    def click(kind: str, pair: str, left_image: int) -> str:
        if kind == "random":
            return rng.choice(("left", "right"))
        if kind == "left":
            return "left"
        true_first = true[pair] == store.get_pair(pair).image_0  # type: ignore[union-attr]
        right_side = "left" if (left_image == 0) == true_first else "right"  # the true image
        return right_side if rng.random() < 0.9 else {"left": "right", "right": "left"}[right_side]

    active = dict(team)
    while active:
        for user, kind in list(active.items()):
            nxt = lab.next_for(user)
            if not nxt:
                del active[user]
                continue
            choice = click(kind, nxt["pair_id"], nxt["left_image"])
            lab.vote(user, vote_id=uuid.uuid4().hex, pair_id=nxt["pair_id"], choice=choice,
                     left_image=nxt["left_image"], decide_ms=rng.randint(500, 4000))  # fmt: skip
    quality = team_quality(store, gold_floor=0.7, bias_ceiling=0.8)
    assert sorted(quality["flagged"]) == ["lefty", "rand0", "rand1"], quality_table(quality)
    rows = {r["annotator"]: r for r in quality["annotators"]}
    assert all(rows[u]["gold_votes"] >= 40 for u in team), quality_table(quality)
    assert rows["lefty"]["left_share"] == 1.0
    assert quality["krippendorff_alpha"] is not None

    def agreement(out: Path, **kw) -> tuple[float, dict]:
        summary = export_votes(store, root, out, "pairs", **kw)
        ds = load_pairs(out)
        by_vote = {f"label:{v['vote_id']}": v["pair_id"] for v in store.all_votes()}
        hits = [
            row["chosen"]["bytes"] == (root / true[by_vote[row["source"]]]).read_bytes()
            for row in ds.cast_column("chosen", _raw()).select_columns(["chosen", "source"])
        ]
        return sum(hits) / len(hits), summary

    with_all, s_all = agreement(tmp_path / "all")
    without, s_clean = agreement(tmp_path / "clean", exclude_flagged=True)
    assert s_clean["excluded_annotators"] == ["lefty", "rand0", "rand1"]
    assert s_clean["skipped"]["flagged"] == s_all["rows"] - s_clean["rows"] > 0
    assert without > with_all, (without, with_all)
    print(quality_table(quality))
    print(
        f"agreement with the true labels: {with_all:.3f} with all, {without:.3f} without the "
        f"flagged ({s_clean['skipped']['flagged']} votes left out)"
    )


def _raw():
    from datasets import Image

    return Image(decode=False)


def test_page_asks_each_question_then_stores_one_vote_and_admin_shows_quality(
    tmp_path: Path,
) -> None:
    """The page's handlers: three keys answer three questions of one pair (undo steps back a
    question), one vote is stored; the admin view carries the quality table."""
    from types import SimpleNamespace

    pytest.importorskip("gradio")
    from mmalign_label.app import LabelApp
    from mmalign_label.users import Authenticator, add_user

    store, root = _store_with_pairs(tmp_path, 3)
    save_criteria(store, load_criteria(_write(tmp_path / "c.yaml", CRITERIA)))
    users = tmp_path / "users.txt"
    add_user(users, "ann", "pw")
    add_user(users, "lead", "pw", "admin")
    app = LabelApp(store, root, Authenticator(users), seed=0)
    ann = SimpleNamespace(username="ann")
    state, prompt, *_ = app.on_load(ann)
    assert "Question 1 of 3: Which image do you prefer overall?" in prompt
    state, prompt, *_ = app.on_vote("left", state, ann)
    assert "Question 2 of 3" in prompt and store.votes_of("ann") == []
    state, prompt, *_ = app.on_vote("tie", state, ann)
    state, prompt, *_ = app.on_undo(state, ann)  # back to question 2, nothing stored
    assert "Question 2 of 3" in prompt and state["answers"] == {"overall": "left"}
    state, prompt, *_ = app.on_vote("both_bad", state, ann)
    pair = state["pair_id"]
    state, prompt, *_ = app.on_vote("right", state, ann)
    assert "Question 1 of 3" in prompt and state["pair_id"] != pair
    (vote,) = store.votes_of("ann")
    assert vote["choice"] == "left" and vote["pair_id"] == pair
    out = export_votes(store, root, tmp_path / "e", "pairs", criterion="alignment")
    assert out["rows"] == 1
    out = export_votes(store, root, tmp_path / "e", "pairs", criterion="appeal")
    assert out["rows"] == 0 and out["skipped"] == {"both_bad": 1}
    *_, team, note = app.on_admin(SimpleNamespace(username="lead"))
    assert note.startswith("Krippendorff's alpha (nominal): –")
    assert [row[0] for row in team] == ["ann"] and team[0][1] == 1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_server_takes_answers_on_both_vote_routes_and_admin_gets_quality(tmp_path: Path) -> None:
    """A running server with --criteria: the fast route and the Gradio API vote with
    `answers` (refused without them), and admin_stats carries the quality table."""
    import urllib.error
    import urllib.request

    pytest.importorskip("gradio")
    from gradio_client import Client
    from mmalign_label.testing import serve
    from mmalign_label.users import add_user

    data = make_pairs_dataset(tmp_path / "pairs", 4, size=16)
    users = tmp_path / "users.txt"
    add_user(users, "ann", "pw-ann")
    add_user(users, "lead", "pw-lead", "admin")
    criteria = _write(tmp_path / "c.yaml", CRITERIA)
    db = tmp_path / "labels.sqlite"
    args = ["--data", str(data), "--users", str(users), "--db", str(db), "--criteria",
            str(criteria), "--gold-floor", "0.6"]  # fmt: skip

    def post(url: str, cookie: str, body: dict) -> tuple[int, dict]:
        req = urllib.request.Request(url + "/label_api/vote", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json",
                                                             "Cookie": cookie})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    with serve(args, log=tmp_path / "server.log") as server:
        login = urllib.request.Request(server.url + "/login", method="POST",
                                       data=b"username=ann&password=pw-ann",
                                       headers={"Content-Type":
                                                "application/x-www-form-urlencoded"})  # fmt: skip
        with urllib.request.urlopen(login, timeout=20) as r:
            cookie = "; ".join(c.split(";")[0] for c in r.headers.get_all("Set-Cookie"))
        client = Client(server.url, auth=("ann", "pw-ann"), verbose=False)
        pair = client.predict(api_name="/next_pair")
        vote = {"vote_id": uuid.uuid4().hex, "pair_id": pair["pair_id"], "choice": "left",
                "left_image": pair["left_image"], "decide_ms": 800}  # fmt: skip
        status, err = post(server.url, cookie, vote)
        assert status == 400 and "asks 3 questions" in err["error"]
        answers = {"overall": "left", "appeal": "tie", "alignment": "both_bad"}
        status, ack = post(server.url, cookie, {**vote, "answers": answers})
        assert status == 200 and ack["status"] == "stored"
        nxt = ack["next"]
        ack = client.predict(uuid.uuid4().hex, nxt["pair_id"], "right", nxt["left_image"], 700,
                             {"overall": "right", "appeal": "right", "alignment": "left"},
                             api_name="/vote")  # fmt: skip
        assert ack["status"] == "stored"
        admin = Client(server.url, auth=("lead", "pw-lead"), verbose=False)
        stats = admin.predict(api_name="/admin_stats")
        assert stats["quality"]["thresholds"]["gold_floor"] == 0.6
        assert [r["annotator"] for r in stats["quality"]["annotators"]] == ["ann"]
    store = Store(db)
    out = export_votes(store, str(db) + ".images", tmp_path / "e", "pairs", criterion="appeal")
    assert out["rows"] == 2 and out["criterion"] == "appeal"


def test_the_gold_draw_is_keyed_per_database(tmp_path: Path) -> None:
    """Whether an annotator's k-th pair is gold depends on a secret of the database, not on
    (name, k) alone, which the annotator knows: two databases draw differently, and one
    database keeps its key across reopening."""
    from mmalign_label import goldmix

    one, two = Store(tmp_path / "a.sqlite"), Store(tmp_path / "b.sqlite")
    key_one, key_two = one._gold_key(), two._gold_key()
    assert len(key_one) == 32 and key_one != key_two
    draws = [[goldmix.draw_gold("ann", k, 0.3, key) for k in range(200)]
             for key in (key_one, key_two)]  # fmt: skip
    assert draws[0] != draws[1] and 30 < sum(draws[0]) < 90
    assert Store(tmp_path / "a.sqlite")._gold_key() == key_one
