"""Prompt mode's "one generation at a time" holds on every path into `on_generate`.

Gradio's queue runs Generate one at a time (`concurrency_limit=1`), but Gradio leaves its
REST routes open (`api_open`, on off Hugging Face Spaces): `POST /gradio_api/run/predict`
with the event's `fn_index` runs it at once, beside the queue. One signed-in annotator's
parallel direct calls all passed the per-user gap (stamped only when a generation ended),
each then waited on the model's lock in one of Gradio's worker threads, and the model ran
their generations back to back ahead of everyone else's Generate. A real server (uvicorn in
a thread, the app's whole middleware stack), a fake model that waits for the test."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("gradio")
pytest.importorskip("uvicorn")
from mmalign_label.testing import cheap_password_hashes, free_port, make_pairs_dataset
from mmalign_label.users import Authenticator, add_user

pytestmark = pytest.mark.timeout(120)


def _request(url: str, body: bytes | None = None, cookie: str = "",
             ctype: str = "application/json") -> tuple[int, bytes, Any]:  # fmt: skip
    headers = {"Content-Type": ctype, **({"Cookie": cookie} if cookie else {})}
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers


def test_direct_calls_cannot_run_one_users_generations_in_parallel(tmp_path: Path) -> None:
    import uvicorn
    from mmalign_label.app import LabelApp
    from mmalign_label.images import import_pairs
    from mmalign_label.server import build_server
    from mmalign_label.store import Store

    users = tmp_path / "users.txt"
    with cheap_password_hashes(2**10):
        add_user(users, "ann", "pw-ann")
    store = Store(tmp_path / "db.sqlite")
    store.add_pairs(import_pairs(make_pairs_dataset(tmp_path / "pairs", 2, size=16),
                                 tmp_path / "img"))  # fmt: skip
    label = LabelApp(store, tmp_path / "img", Authenticator(users), model="fake")
    entered: list[str] = []
    release = threading.Event()
    model_lock = threading.Lock()  # PairGenerator's: the model runs one generation at a time

    def generate(prompt: str):  # type: ignore[no-untyped-def]
        entered.append(prompt)  # the call got past the app's checks
        with model_lock:
            release.wait(20)
        return store.next_pair("nobody")

    label.generator = SimpleNamespace(generate=generate)  # type: ignore[assignment]
    server = uvicorn.Server(uvicorn.Config(build_server(label), host="127.0.0.1",
                                           port=free_port(), log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        url = f"http://127.0.0.1:{server.config.port}"
        form = "application/x-www-form-urlencoded"
        status, _, headers = _request(url + "/login", b"username=ann&password=pw-ann",
                                      ctype=form)  # fmt: skip
        assert status == 200
        cookie = "; ".join(c.split(";")[0] for c in headers.get_all("Set-Cookie"))
        config = json.loads(_request(url + "/config", cookie=cookie)[1])
        textboxes = {c["id"] for c in config["components"] if c["type"] == "textbox"}
        fn = next(i for i, d in enumerate(config["dependencies"])
                  if d["inputs"] and d["inputs"][0] in textboxes)  # fmt: skip
        answers: list[tuple[int, bytes]] = []

        def call(k: int) -> None:
            body = {"data": [f"a red circle {k}"], "fn_index": fn, "session_hash": f"gen{k}xyz"}
            status, text, _ = _request(url + "/gradio_api/run/predict",
                                       json.dumps(body).encode(), cookie)  # fmt: skip
            answers.append((status, text))

        calls = [threading.Thread(target=call, args=(k,)) for k in range(4)]
        for t in calls:
            t.start()
        deadline = time.monotonic() + 5
        while len(answers) < 3 and time.monotonic() < deadline:  # all but the running one
            time.sleep(0.05)
        release.set()
        for t in calls:
            t.join(30)
        # one generation ran; the other calls were answered at once, not parked on the model
        assert len(entered) == 1, entered
        assert len(answers) == 4 and {s for s, _ in answers} == {200}
        assert sum(b"One generation at a time" in text for _, text in answers) == 3
    finally:
        release.set()
        server.should_exit = True
        thread.join(10)
