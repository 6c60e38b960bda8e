"""How a script recognises a vote-id conflict, on a running server (review 9).

docs/labeling.md said only that `/vote` through `gradio_client` "raises the error with that
message". It raises `gradio_client.exceptions.AppError` for every refused vote, so the docs
now say how the conflict is told apart (the message starts with `conflict:`; over `POST
/label_api/vote` a 409, the only 409), with a snippet. Here the snippet runs against a real
server, next to the other refusals a script meets.
"""

from __future__ import annotations

import json
import re
import textwrap
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gradio")
from gradio_client import Client
from gradio_client.exceptions import AppError
from label_helpers import login_cookie
from mmalign_label.testing import Server, cheap_password_hashes, make_pairs_dataset, serve
from mmalign_label.users import add_user

pytestmark = pytest.mark.timeout(300)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "labeling.md"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("conflict")
    data = make_pairs_dataset(root / "pairs", 6, size=16)
    users = root / "users.txt"
    with cheap_password_hashes():
        for name in ("ann", "eve"):
            add_user(users, name, f"pw-{name}-long")
    args = ["--data", str(data), "--users", str(users), "--db", str(root / "labels.sqlite"),
            "--overlap", "2"]  # fmt: skip
    with serve(args, log=root / "server.log") as s:
        yield s


def _snippet() -> str:
    """The docs' Python example of telling a conflict apart through `gradio_client`."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    found = [b for b in blocks if "AppError" in b and "conflict:" in b]
    assert len(found) == 1, "docs/labeling.md: no gradio_client conflict example"
    return textwrap.dedent(found[0])


def _run_snippet(client: Client, vote_id: str, pair: dict[str, Any], choice: str) -> dict:
    code = _snippet().replace('"left"', "choice")  # the vote the example sends, varied
    scope = {"client": client, "vote_id": vote_id, "pair_id": pair["pair_id"],
             "left_image": pair["left_image"], "choice": choice}  # fmt: skip
    exec(compile(code, str(DOCS), "exec"), scope)
    return scope


def test_the_docs_example_tells_a_conflict_from_other_refusals(server: Server) -> None:
    ann = Client(server.url, auth=("ann", "pw-ann-long"), verbose=False)
    eve = Client(server.url, auth=("eve", "pw-eve-long"), verbose=False)
    pair = ann.predict(api_name="/next_pair")
    vid = uuid.uuid4().hex
    assert _run_snippet(ann, vid, pair, "left")["ack"]["status"] == "stored"
    assert _run_snippet(ann, vid, pair, "left")["ack"]["status"] == "duplicate"  # a retry
    # the same id for another vote: the example's conflict branch (no `ack`, nothing raised)
    assert "ack" not in _run_snippet(ann, vid, pair, "right")
    with pytest.raises(AppError) as err:  # what the example catches, seen directly
        ann.predict(vid, pair["pair_id"], "tie", pair["left_image"], 900, api_name="/vote")
    assert err.value.message.startswith("conflict:") and str(err.value) == err.value.message
    assert "(choice differ)" in err.value.message
    # other refusals are AppErrors too, and the example lets them through
    eve_pair = eve.predict(api_name="/next_pair")
    for client, vote_id, sent in ((eve, vid, eve_pair), (ann, "bad", pair),
                                  (ann, uuid.uuid4().hex, pair)):  # fmt: skip
        with pytest.raises(AppError) as other:
            _run_snippet(client, vote_id, sent, "left")
        assert not other.value.message.startswith("conflict:"), other.value.message
    assert [v["choice"] for v in ann.predict(api_name="/my_votes")] == ["left"]


def _post_vote(url: str, cookie: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/label_api/vote", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Cookie": cookie},
                                 method="POST")  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_fast_route_answers_a_conflict_with_409_and_other_refusals_with_400(server) -> None:
    cookie = login_cookie(server.url, "eve", "pw-eve-long")
    mine = Client(server.url, auth=("eve", "pw-eve-long"), verbose=False)
    pair = mine.predict(api_name="/next_pair")
    vote = {"vote_id": uuid.uuid4().hex, "pair_id": pair["pair_id"], "choice": "left",
            "left_image": pair["left_image"], "decide_ms": 900}  # fmt: skip
    assert _post_vote(server.url, cookie, vote)[1]["status"] == "stored"
    status, body = _post_vote(server.url, cookie, {**vote, "choice": "right"})
    assert status == 409 and body["status"] == "conflict", body
    assert body["error"].startswith("conflict:")
    status, body = _post_vote(server.url, cookie, {**vote, "vote_id": uuid.uuid4().hex})
    assert status == 400 and "status" not in body and "already voted" in body["error"], body
