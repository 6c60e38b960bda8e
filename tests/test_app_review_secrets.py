"""The labeling commands never print a database password: `mmalign label` (serve), `gold
add` and their errors name a PostgreSQL URL with its password hidden, as the connect error
already did (docs/labeling.md: "the password hidden")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("gradio")
from mmalign_label import server
from mmalign_label.store import Store
from mmalign_label.testing import make_pairs_dataset
from mmalign_label.users import add_user
from mmalign_label.vlm_pairs import VlmDataError, add_vlm_pairs

from mmalign.cli import main

SECRET = "Hunter2-db-secret"


def _with_password(url: str) -> str:
    # the session's server trusts 127.0.0.1, so any password connects; it must not be shown
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@", 1)


def test_serve_and_gold_add_never_print_the_database_password(
    tmp_path: Path, postgres, monkeypatch, capsys
) -> None:
    url = _with_password(postgres.database("secrets"))
    assert SECRET in url
    users = tmp_path / "users.txt"
    add_user(users, "maria", "pw-maria")
    data = make_pairs_dataset(tmp_path / "pairs", 3, size=16)
    images = str(tmp_path / "images")
    served: list[object] = []
    monkeypatch.setattr(server, "serve", lambda *a, **k: served.append(a))
    assert main(["label", "--data", str(data), "--db", url, "--images", images,
                 "--users", str(users)]) == 0  # fmt: skip
    assert served
    gold = make_pairs_dataset(tmp_path / "gold", 2, size=16, seed=3)
    assert main(["label", "gold", "add", str(gold), "--db", url, "--images", images]) == 0
    bad = tmp_path / "gold.jsonl"
    bad.write_text(json.dumps({"pair_id": "nope", "answer": "image_0"}) + "\n")
    main(["label", "gold", "add", str(bad), "--db", url, "--images", images])  # an error
    empty = _with_password(postgres.database("secrets_empty"))
    main(["label", "--db", empty, "--images", images, "--users", str(users)])  # "has no pairs"
    out = capsys.readouterr()
    text = out.out + out.err
    assert "new pairs" in text and "gold pairs in" in text and "has no pairs" in text, text
    assert SECRET not in text, text
    assert "postgres:***@" in text, text
    with pytest.raises(VlmDataError, match="holds image pairs") as err:  # VLM rows after images
        add_vlm_pairs(Store(url), [])
    assert SECRET not in str(err.value) and "***" in str(err.value)
