"""A link from another site reaches the labeling app's page, never its API (review 9).

A top-level navigation carries the `SameSite=Lax` session cookie, and `hardening.cross_site`
let every cross-site GET navigation through: another site could link a signed-in annotator
to `GET /label_api/next_pair`, which reserves a pair for them (a lease), or to any GET of
`/gradio_api/`. Now only the page and its static files may be linked to; same-origin and
header-less requests (scripts, curl) are served as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
from mmalign_label.hardening import RequestLimits, cross_site
from mmalign_label.store import Pair, Store

HOST = "labels.example.org"
LINK = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate", "sec-fetch-dest": "document"}
SIBLING = {**LINK, "sec-fetch-site": "same-site"}  # a link from another host of the same site
OWN_FETCH = {"sec-fetch-site": "same-origin", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty"}


def _scope(method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "method": method, "path": path, "query_string": b"",
            "headers": [(b"host", HOST.encode()), *raw]}  # fmt: skip


API_PATHS = ["/label_api/next_pair", "/label_api/next_pair/", "/label_api/vote",
             "/gradio_api/token", "/gradio_api/info", "/gradio_api/call/next_pair/abc",
             "/gradio_api/queue/data", "/gradio_api/file=/tmp/x.png", "/gradio_api/theme.css",
             "/config", "/logout", "/logout/", "//label_api/next_pair"]  # fmt: skip
PAGE_PATHS = [
    "/",
    "",
    "/login",
    "/favicon.ico",
    "/assets/index-3f2a.js",
    "/static/img/logo.svg",
    "/svelte/svelte.js",
    "/manifest.json",
    "/robots.txt",
    "/theme.css",
    "/pwa_icon/192",
]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("link", [LINK, SIBLING], ids=["cross-site", "same-site"])
@pytest.mark.parametrize("path", API_PATHS)
def test_a_link_from_another_site_to_an_api_route_is_refused(path, link, method) -> None:
    assert cross_site(_scope(method, path, link)) == "cross-site request refused"


@pytest.mark.parametrize("link", [LINK, SIBLING], ids=["cross-site", "same-site"])
@pytest.mark.parametrize("path", PAGE_PATHS)
def test_a_link_from_another_site_to_the_page_or_its_files_opens_it(path, link) -> None:
    assert cross_site(_scope("GET", path, link)) is None
    assert cross_site(_scope("HEAD", path, link)) is None
    assert cross_site(_scope("POST", path, link))  # a form posted from another site: never


@pytest.mark.parametrize("path", API_PATHS)
def test_own_pages_scripts_and_typed_addresses_reach_the_api(path) -> None:
    own_link = {**LINK, "sec-fetch-site": "same-origin"}  # a link on the app's own page
    typed = {**LINK, "sec-fetch-site": "none"}  # the address bar, a bookmark
    for headers in ({}, OWN_FETCH, own_link, typed, {"origin": f"https://{HOST}"}):
        assert cross_site(_scope("GET", path, headers)) is None, headers


# ------------------------------------------------------ the lease behind the fast route


@pytest.fixture
def fast_app(tmp_path: Path) -> Iterator[tuple[Any, Store]]:
    from fastapi import FastAPI
    from mmalign_label.fast_routes import add_fast_routes
    from mmalign_label.labeling import Labeling

    store = Store(str(tmp_path / "labels.sqlite"))
    store.add_pairs([Pair("p0", "a red circle", "a.png", "b.png", "t")])
    inner = FastAPI()  # stands in for the mounted Gradio app: its session table
    inner.cookie_id, inner.tokens = "c", {"tok": "maria"}  # type: ignore[attr-defined]
    outer = FastAPI()
    add_fast_routes(outer, Labeling(store, seed=0))
    outer.mount("/", inner)
    yield outer, store
    store.close()


def _leases(store: Store) -> list[tuple[str, str]]:
    from mmalign_label.tables import leases

    with store.read.begin() as conn:
        return [(r.pair_id, r.annotator) for r in conn.execute(leases.select())]


@pytest.mark.parametrize("limits", [True, False], ids=["behind RequestLimits", "route alone"])
def test_a_link_to_next_pair_reserves_nothing(fast_app, limits: bool) -> None:
    from fastapi.testclient import TestClient

    app, store = fast_app
    client = TestClient(RequestLimits(app) if limits else app, base_url=f"http://{HOST}")
    client.cookies.set("access-token-c", "tok")
    for link in (LINK, SIBLING):
        r = client.get("/label_api/next_pair", headers=link)
        assert r.status_code == 403 and "p0" not in r.text, r.text
    assert _leases(store) == []
    free = store.next_pair("other")  # one annotator per pair: maria holds no lease on it
    assert free is not None and free.pair_id == "p0"


def test_own_page_and_scripts_still_get_their_pair(fast_app) -> None:
    from fastapi.testclient import TestClient

    app, store = fast_app
    client = TestClient(RequestLimits(app), base_url=f"http://{HOST}")
    client.cookies.set("access-token-c", "tok")
    r = client.get("/label_api/next_pair", headers=OWN_FETCH)
    assert r.status_code == 200 and r.json()["pair_id"] == "p0", r.text
    assert _leases(store) == [("p0", "maria")]
    r = client.get("/label_api/next_pair")  # a script: no Fetch Metadata, no Origin
    assert r.status_code == 200 and r.json()["pair_id"] == "p0", r.text
    vote = {"vote_id": "v" * 16, "pair_id": "p0", "choice": "left", "left_image": 0,
            "decide_ms": 900}  # fmt: skip
    r = client.post("/label_api/vote", json=vote, headers={"origin": f"http://{HOST}"})
    assert r.status_code == 200 and r.json()["status"] == "stored", r.text
    r = client.post("/label_api/vote", json=vote, headers={"origin": "https://evil.example"})
    assert r.status_code == 403


# ------------------------------------------------------------------ the whole server


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[Any, str, Store]]:
    pytest.importorskip("gradio")
    from fastapi.testclient import TestClient
    from mmalign_label.app import LabelApp
    from mmalign_label.server import build_server
    from mmalign_label.testing import cheap_password_hashes
    from mmalign_label.users import Authenticator, add_user
    from PIL import Image

    root = tmp_path_factory.mktemp("cross_site")
    users = root / "users.txt"
    with cheap_password_hashes():
        add_user(users, "ann", "pw-ann-long")
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), (200, 30, 30)).save(root / name)
    store = Store(str(root / "labels.sqlite"))
    store.add_pairs([Pair("p0", "a red square", "a.png", "b.png", "t")])
    app = build_server(LabelApp(store, root, Authenticator(users)), host=HOST, port=80)
    with TestClient(app, base_url=f"http://{HOST}") as client:
        r = client.post("/login", data={"username": "ann", "password": "pw-ann-long"})
        assert r.status_code == 200, r.text
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        client.cookies.clear()
        yield client, cookie, store
    store.close()


def test_the_served_app_opens_from_a_link_but_its_api_does_not(served) -> None:
    client, cookie, store = served
    signed_in = {"cookie": cookie}
    r = client.get("/", headers={**signed_in, **LINK})
    assert r.status_code == 200 and "<html" in r.text.lower()  # the app itself
    assert client.get("/", headers=LINK).status_code == 200  # signed out: the login form
    for path in ("/label_api/next_pair", "/gradio_api/info", "/gradio_api/token", "/logout"):
        r = client.get(path, headers={**signed_in, **LINK})
        assert r.status_code == 403, (path, r.status_code, r.text[:200])
    assert _leases(store) == []
    r = client.get("/label_api/next_pair", headers=signed_in)  # a script with the cookie
    assert r.status_code == 200 and r.json()["pair_id"] == "p0", r.text
    assert client.get("/gradio_api/info", headers={**signed_in, **OWN_FETCH}).status_code == 200
    assert _leases(store) == [("p0", "ann")]
