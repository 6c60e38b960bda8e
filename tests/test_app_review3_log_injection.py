"""Gradio's `/gradio_api/custom_component/{id}/client/{type}/{file_name}` prints its path
parameters to the server's output before it looks for the component (review 3, defect 2):
a signed-in annotator wrote whatever they liked into the server's log, carriage returns,
terminal escapes and Unicode line separators included, up to a 64 KiB line per request
(a log that fills the disk). The app has no custom components: the route is closed
(404) like the other unused ones."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio")
from label_helpers import login_cookie
from mmalign_label.testing import cheap_password_hashes, make_pairs_dataset, serve
from mmalign_label.users import add_user

pytestmark = pytest.mark.timeout(300)


def _get(url: str, cookie: str | None = None) -> int:
    req = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def test_a_signed_in_user_cannot_write_into_the_server_log(tmp_path: Path) -> None:
    data = make_pairs_dataset(tmp_path / "pairs", 4, size=24)
    users = tmp_path / "users.txt"
    with cheap_password_hashes():
        add_user(users, "mallory", "pw-mallory")
    log = tmp_path / "server.log"
    args = ["--data", str(data), "--users", str(users), "--db", str(tmp_path / "l.sqlite")]
    with serve(args, log=log) as server:
        cookie = login_cookie(server.url, "mallory", "pw-mallory")
        forged = "\r\x1b[2Klabel: FORGED-LINE admin boss signed in"
        quoted = urllib.parse.quote(forged, safe="")
        for path in (f"/gradio_api/custom_component/{quoted}/client/x/y",
                     f"/gradio_api/custom_component/a/client/{quoted}/y",
                     f"/gradio_api/custom_component/{quoted}/client/x/y/",
                     f"/gradio_api/custom_component/{quoted}/server/x/y"):  # fmt: skip
            assert _get(server.url + path, cookie) == 404, path
            assert _get(server.url + path) == 404, path  # closed for everyone
        assert _get(server.url + "/config", cookie) == 200  # the page still loads
    assert "FORGED-LINE" not in log.read_text(errors="replace")
