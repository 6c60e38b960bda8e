"""`mmalign data users SOURCE --out DIR`: PPD's per-user pairs from Pick-a-Pic-format data.

configs/sdxl/ppd.yaml read `data.path: data/pickapic_ppd_users` ("build it yourself") and nothing
built it: Pick-a-Pic v2 itself is refused by the PPD recipe, whose users mostly have fewer than
`ppd.shots` decided pairs (`ppd_recipe.check_user_rows`). The command keeps the users with
enough decided pairs, splits them by user into DIR/train and DIR/heldout, and counts what it
dropped. Here on a tiny Pick-a-Pic parquet (as tests/test_pickapic.py writes one): users of
different pair counts, ties, rows without a user id.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mmalign.cli import build_parser, main
from mmalign.config import ConfigError, load_config
from mmalign.data.pickapic import write_pickapic
from mmalign.data.saved import load_saved
from mmalign.data.schema import load_pairs, write_pairs
from mmalign.data.users import DEFAULT_MIN_PAIRS, split_users
from mmalign.diffusion.data import open_pairs
from mmalign.diffusion.ppd_recipe import check_user_rows
from mmalign.train.config import Config, PPDConfig

ROOT = Path(__file__).resolve().parents[1]
# user -> (decided pairs, tied pairs); None: rows without a user id
USERS: dict[int | None, tuple[int, int]] = {
    **{100 + k: (6, 0) for k in range(6)},  # kept
    200: (3, 0),  # too few decided pairs
    201: (0, 2),  # only ties
    202: (5, 2),  # kept: 5 decided pairs, its 2 ties not written
    None: (2, 0),  # no user id: counted, dropped
}
KEPT = {str(100 + k) for k in range(6)} | {"202"}


def _rows() -> list[dict]:
    """Rows of the users in USERS, interleaved (a user's rows are not contiguous, as in
    Pick-a-Pic); prompt "u<user> <i>" numbers a user's rows in the order written."""
    per_user = {}
    for user, (decided, tied) in USERS.items():
        labels = [1.0] * decided + [0.5] * tied
        labels = labels[::2] + labels[1::2]  # ties between decided pairs
        per_user[user] = [
            {
                "prompt": f"u{user} {i}",
                "chosen": Image.new("RGB", (8, 8), (200, 20 * i, 0)),
                "rejected": Image.new("RGB", (8, 8), (0, 20 * i, 200)),
                "label": label,
                "user_id": user,
            }
            for i, label in enumerate(labels)
        ]
    rows = []
    while any(per_user.values()):
        for user in USERS:
            if per_user[user]:
                rows.append(per_user[user].pop(0))
    return rows


@pytest.fixture(scope="module")
def pickapic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pickapic") / "pp"
    write_pickapic(_rows(), root, "train", shard_size=20)  # three shards
    return root


@pytest.fixture(scope="module")
def built(pickapic, tmp_path_factory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("users") / "out"
    argv = ["data", "users", str(pickapic), "--out", str(out), "--heldout-users", "2"]
    assert main(argv) == 0
    return out, json.loads((out / "summary.json").read_text()), str(pickapic)


def _users(rows) -> dict[str, int]:
    counts: dict[str, int] = {}
    for user in rows["user_id"]:
        counts[str(user)] = counts.get(str(user), 0) + 1
    return counts


def test_users_are_kept_split_and_every_dropped_row_counted(built) -> None:
    out, summary, _ = built
    train, heldout = load_pairs(out / "train"), load_pairs(out / "heldout")
    train_users, heldout_users = _users(train), _users(heldout)
    assert len(heldout_users) == 2 and not set(train_users) & set(heldout_users)
    assert set(train_users) | set(heldout_users) == KEPT
    assert sorted(heldout_users) == summary["heldout_users"]
    for counts in (train_users, heldout_users):  # decided pairs only: 6 each, 202's 5
        assert all(n == (5 if u == "202" else 6) for u, n in counts.items())
    assert 0.5 not in [*train["label"], *heldout["label"]]
    total = sum(d + t for d, t in USERS.values())
    assert summary["rows"] == {
        "read": total,
        "written": {"train": len(train), "heldout": len(heldout)},
        "dropped": {"no_user_id": 2, "tie": 4, "user_too_few_pairs": 3},
    }
    assert len(train) + len(heldout) + 2 + 4 + 3 == total  # never silently lost
    assert summary["users"]["dropped"] == {"only_ties": 1, "too_few_pairs": 1}
    assert summary["users"]["kept"] == {"train": 5, "heldout": 2}
    assert summary["users"]["by_decided_pairs"] == {"0": 1, "3": 1, "5": 1, "6": 6}
    assert summary["min_pairs"] == DEFAULT_MIN_PAIRS == 5
    # each user's rows in the order read: a held-out user's first shots are its first pairs
    for rows in (train, heldout):
        pairs = list(zip(rows["prompt"], rows["user_id"], strict=True))
        for user in _users(rows):
            numbers = [int(p.split()[1]) for p, u in pairs if str(u) == user]
            assert numbers == sorted(numbers)


def test_the_default_min_pairs_is_ppd_shots_and_one_to_evaluate_on() -> None:
    assert DEFAULT_MIN_PAIRS == PPDConfig().shots + 1


def test_the_split_is_seeded_by_user_not_by_row_order() -> None:
    users = [f"u{k}" for k in range(20)]
    a = split_users(users, 4, seed=0)
    assert split_users(list(reversed(users)), 4, seed=0) == a
    assert any(split_users(users, 4, seed=s)[1] != a[1] for s in range(1, 5))
    train, heldout = a
    assert len(heldout) == 4 and not set(train) & set(heldout) and len(train) == 16


def test_the_train_folder_passes_ppd_s_per_user_check_end_to_end(built) -> None:
    out, summary, source = built
    recipe = ROOT / "configs" / "sdxl" / "ppd.yaml"
    # the source itself: refused, short users named (what made the command necessary)
    raw = load_config(Config, recipe, [f"data.path={source}"])
    rows, _ = open_pairs(raw.data.path, raw.data.split)
    with pytest.raises(ConfigError, match=r"ppd\.shots: .*200 \(3\)"):
        check_user_rows(raw, rows)
    # the recipe as shipped (data.path DIR, data.split train) and DIR/train: accepted
    for path in (out, out / "train"):
        cfg = load_config(Config, recipe, [f"data.path={path}"])
        assert cfg.data.split == "train" and cfg.ppd.shots == 4 and cfg.ppd.embeddings is None
        rows, _ = open_pairs(cfg.data.path, cfg.data.split)
        check_user_rows(cfg, rows)
        assert set(_users(rows)) <= KEPT and len(_users(rows)) == 5
    # the held-out folder is its own split: never read as training data by mistake
    with pytest.raises(ValueError, match=r"one saved split, 'heldout'"):
        open_pairs(str(out / "heldout"), "train")
    held = summary["rows"]["written"]["heldout"]
    assert len(open_pairs(str(out / "heldout"), "heldout")[0]) == held


def test_user_embed_reads_the_held_out_folder(built, tmp_path, monkeypatch) -> None:
    from mmalign.data_cli import user_embed_paths
    from mmalign.vlm.user_embed import examples_from_pairs

    out, summary, _ = built
    _, pairs, target = user_embed_paths(str(out / "heldout"), None)
    assert pairs == out / "heldout" and target == out / "heldout" / "user_embeddings"
    examples, ties = examples_from_pairs(load_pairs(pairs))
    assert ties == 0 and sorted(examples) == summary["heldout_users"]
    assert all(len(e) >= 5 for e in examples.values())  # 4 shots and one more
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    embeddings = tmp_path / "emb"
    argv = ["data", "user-embed", str(out / "heldout"), "--shots", "4", "--out", str(embeddings)]
    assert main(argv) == 0
    info = json.loads((embeddings / "user_embeddings.json").read_text())
    assert sorted(info["users"]) == summary["heldout_users"]


def test_the_command_prints_what_it_kept_and_dropped(pickapic, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["data", "users", "pickapic:train", "--pickapic-root", str(pickapic),
            "--out", str(out), "--seed", "3"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "users: 9 seen, 7 kept with >= 5 decided pairs (6 train, 1 held out), 2 dropped " \
           "(only_ties 1, too_few_pairs 1)" in printed  # fmt: skip
    assert "dropped: 4 tied, 3 of dropped users, 2 without a user_id" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"]["source"] == "pickapic:train"
    assert summary["heldout_rule"] == "--heldout-share 0.1"  # the default: at least one user


def test_a_saved_pair_folder_with_user_ids_and_max_rows(tmp_path) -> None:
    rows = [{k: v for k, v in r.items()} | {"user_id": None if r["user_id"] is None else
             f"x{r['user_id']}"} for r in _rows()]  # fmt: skip
    write_pairs(rows, tmp_path / "saved", "image")
    out = tmp_path / "out"
    assert main(["data", "users", str(tmp_path / "saved"), "--out", str(out),
                 "--heldout-users", "0", "--min-pairs", "3"]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["users"]["kept"] == {"train": 8, "heldout": 0}  # 200's 3 pairs now enough
    assert len(load_saved(out / "heldout")) == 0  # written, empty, readable
    assert main(["data", "users", str(tmp_path / "saved"), "--out", str(tmp_path / "few"),
                 "--max-rows", "20", "--min-pairs", "1"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "few" / "summary.json").read_text())["rows"]["read"] == 20


def _error(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(["data", "users", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_no_user_id_column_is_a_clear_error(tmp_path, capsys) -> None:
    rows = [{k: v for k, v in r.items() if k != "user_id"} for r in _rows()[:4]]
    write_pairs(rows, tmp_path / "saved", "image")
    err = _error([str(tmp_path / "saved"), "--out", str(tmp_path / "out")], capsys)
    assert "SOURCE: no user_id column (columns: prompt, chosen, rejected, label" in err
    assert not (tmp_path / "out" / "train").exists()
    nobody = [r | {"user_id": None} for r in _rows()[:4]]
    write_pickapic(nobody, tmp_path / "pp", "train")
    err = _error([str(tmp_path / "pp"), "--out", str(tmp_path / "out")], capsys)
    assert "none of the 4 rows read has a user_id" in err


def test_no_user_with_enough_pairs_says_who_had_how_many(pickapic, tmp_path, capsys) -> None:
    err = _error([str(pickapic), "--out", str(tmp_path / "out"), "--min-pairs", "7"], capsys)
    assert "no user has >= 7 decided (untied) pairs (--min-pairs): of the 9 users read, by " \
           "decided pairs: 1 with 0; 1 with 3; 1 with 5; 6 with 6" in err  # fmt: skip
    err = _error([str(pickapic), "--out", str(tmp_path / "out"), "--heldout-users", "7"], capsys)
    assert "--heldout-users 7 holds out 7 users of the 7 users kept, leaving none" in err
    assert "--heldout-share must be in [0, 1)" in _error(
        [str(pickapic), "--out", str(tmp_path / "o"), "--heldout-share", "1"], capsys
    )
    with pytest.raises(SystemExit):  # one of the two, as argparse says
        main(["data", "users", str(pickapic), "--out", "o", "--heldout-users", "1",
              "--heldout-share", "0.5"])  # fmt: skip


def test_an_earlier_build_is_refused_unless_overwrite(built, pickapic, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = [str(pickapic), "--out", str(out), "--heldout-users", "1"]
    assert main(["data", "users", *argv]) == 0
    (out / "heldout" / "user_embeddings").mkdir()  # made from the old held-out users
    (out / "notes.txt").write_text("mine")
    err = _error(argv, capsys)
    assert f"--out {out} already holds an earlier build (train, heldout" in err
    assert "give --overwrite" in err
    # a build refused under --overwrite leaves the earlier one as it was
    _error([*argv, "--overwrite", "--min-pairs", "9"], capsys)
    assert (out / "heldout" / "user_embeddings").is_dir()
    assert main(["data", "users", *argv, "--overwrite", "--seed", "1"]) == 0
    err = capsys.readouterr().err
    assert f"--overwrite: replacing the earlier build in {out}" in err
    assert "left as they are: notes.txt" in err
    assert "with heldout/user_embeddings)" in err  # deleted with its split: said so
    assert not (out / "heldout" / "user_embeddings").exists()
    assert (out / "notes.txt").read_text() == "mine"
    # SOURCE inside the build --overwrite would delete: refused
    err = _error([str(out / "train"), "--out", str(out), "--overwrite"], capsys)
    assert "is the earlier build in --out" in err
    assert "is a file" in _error([str(pickapic), "--out", str(out / "notes.txt")], capsys)


def test_user_embed_help_names_data_users() -> None:
    parser = build_parser()
    data = next(a for a in parser._subparsers._group_actions[0].choices["data"]._actions
                if a.dest == "data_command")  # fmt: skip
    assert "mmalign data users" in data.choices["user-embed"].format_help()
    assert "--min-pairs" in data.choices["users"].format_help()
