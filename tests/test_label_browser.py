"""The labeling page in a real browser: Playwright drives Debian's Chromium.

Logs in, votes with the keyboard, watches the progress bar advance, undoes a vote, and
checks that the export holds exactly the votes cast. Every step waits for what the
annotator sees (the progress text, the new pair, the bar at rest), never for a time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api")

from mmalign_label.browser import CHROMIUM, Shown, login, wait_shown  # noqa: E402
from mmalign_label.export import export_votes  # noqa: E402
from mmalign_label.pseudonyms import Pseudonyms  # noqa: E402
from mmalign_label.store import Store  # noqa: E402
from mmalign_label.testing import make_pairs_dataset, serve  # noqa: E402
from mmalign_label.users import add_user  # noqa: E402

pytestmark = [
    pytest.mark.slow,  # a server and Chromium: about 15 s
    pytest.mark.timeout(300),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} missing (make test)"),
]
TOTAL = 6


def _press(page, key: str, before: Shown, done: int, *, pair: str | None = None) -> Shown:
    """Press `key`; wait for `done` of TOTAL with a new pair (`pair` when it is known) and the
    bar at rest, which must then be filled to done / TOTAL."""
    page.keyboard.press(key)
    shown = wait_shown(page, done, total=TOTAL, not_pair=None if pair else before["pair"],
                       pair=pair)  # fmt: skip
    assert shown["share"] == pytest.approx(done / TOTAL, abs=0.005), shown  # the bar, too
    return shown


def test_keyboard_votes_progress_undo_and_export(tmp_path: Path) -> None:
    from mmalign.data.schema import load_pairs

    data = make_pairs_dataset(tmp_path / "pairs", 6, size=64)
    users = tmp_path / "users.txt"
    add_user(users, "ann", "pw-ann")
    db = tmp_path / "labels.sqlite"
    with serve(["--data", str(data), "--users", str(users), "--db", str(db)],
               log=tmp_path / "server.log") as server, sync_api.sync_playwright() as p:  # fmt: skip
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            login(page, server.url, "ann", "pw-ann")
            posts: list[str] = []
            page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
            shown = wait_shown(page, 0, total=TOTAL)
            assert shown["share"] == 0.0  # an empty bar, not a full one swept down to 0
            for text in ("[←]", "[→]", "[↓]", "[S]", "[U]"):  # shortcuts shown on screen
                assert page.get_by_text(text, exact=False).count() >= 1
            shown = _press(page, "ArrowLeft", shown, 1)
            shown = _press(page, "ArrowRight", shown, 2)
            tied = _press(page, "ArrowDown", shown, 3)
            shown = _press(page, "u", tied, 2, pair=shown["pair"])  # undo: the tied pair again
            page.get_by_text("Last vote undone").wait_for(timeout=30_000)
            shown = _press(page, "ArrowLeft", shown, 3)
            shown = _press(page, "s", shown, 4)
            # the six key presses went straight to Gradio's run route, none through its queue
            assert sum(u.endswith("/gradio_api/run/predict") for u in posts) == 6, posts
            assert not any("/queue/join" in u for u in posts), posts
        finally:
            browser.close()

    store = Store(db)
    votes = store.votes_of("ann")
    assert [v["choice"] for v in votes] == ["left", "right", "left", "skip"]
    assert len(store.votes_of("ann", include_undone=True)) == 5
    assert all(v["decide_ms"] > 0 for v in votes)
    summary = export_votes(store, str(db) + ".images", tmp_path / "export", "pairs")
    assert summary == {"rows": 3, "skipped": {"skip": 1}, "format": "pairs",
                       "out": str(tmp_path / "export")}  # fmt: skip
    ds = load_pairs(tmp_path / "export")
    cast = {f"label:{v['vote_id']}" for v in votes if v["choice"] != "skip"}
    assert set(ds["source"]) == cast and len(ds) == 3
    assert set(ds["user_id"]) == {Pseudonyms(store)("ann")}  # a pseudonym, not the login name
    assert list(ds["label"]) == [1.0, 1.0, 1.0]


VLM_TOTAL = 4


def test_vlm_response_pair_keyboard_tie_undo_and_export_trains(tmp_path: Path) -> None:
    """VLM mode: an image and a prompt above two text responses; vote with the keyboard
    (a pick, a tie, both bad, an undo), export in TRL's VLM DPO format and train on it."""
    import io
    import json
    import os
    import subprocess
    import sys

    from datasets import load_from_disk
    from PIL import Image

    rows = []
    for i in range(VLM_TOTAL):
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (60 * i, 90, 200 - 40 * i)).save(buf, format="PNG")
        (tmp_path / f"im{i}.png").write_bytes(buf.getvalue())
        rows.append({"prompt": f"What colour is the background? ({i})", "image": f"im{i}.png",
                     "response_0": f"It is blue ({i}).",
                     "response_1": f"It is red ({i})."})  # fmt: skip
    data = tmp_path / "vlm.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    users = tmp_path / "users.txt"
    add_user(users, "ann", "pw-ann")
    db = tmp_path / "labels.sqlite"
    picks: list[tuple[str, list[str]]] = []  # the key and the responses shown (left, right)
    with serve(["--vlm", "--data", str(data), "--users", str(users), "--db", str(db)],
               log=tmp_path / "server.log") as server, sync_api.sync_playwright() as p:  # fmt: skip
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            login(page, server.url, "ann", "pw-ann")
            shown = wait_shown(page, 0, total=VLM_TOTAL, vlm=True)
            assert page.get_by_text("which response is better", exact=False).count() == 1
            for done, key in enumerate(("ArrowLeft", "ArrowDown", "ArrowUp"), start=1):
                picks.append((key, shown["responses"]))
                page.keyboard.press(key)
                before, shown = shown, wait_shown(page, done, total=VLM_TOTAL,
                                                  not_pair=shown["pair"], vlm=True)  # fmt: skip
            page.keyboard.press("u")  # undo "both bad": the same pair again
            shown = wait_shown(page, 2, total=VLM_TOTAL, pair=before["pair"], vlm=True)
            page.get_by_text("Last vote undone").wait_for(timeout=30_000)
            picks[-1] = ("ArrowRight", shown["responses"])
            page.keyboard.press("ArrowRight")
            shown = wait_shown(page, 3, total=VLM_TOTAL, not_pair=before["pair"], vlm=True)
        finally:
            browser.close()

    store = Store(db)
    assert [v["choice"] for v in store.votes_of("ann")] == ["left", "tie", "right"]
    out = tmp_path / "trl"
    summary = export_votes(store, str(db) + ".images", out, "trl")
    assert summary == {"rows": 3, "skipped": {}, "format": "trl", "out": str(out)}
    ds = load_from_disk(str(out))
    got = [(r["chosen"][0]["content"][0]["text"], r["rejected"][0]["content"][0]["text"],
            r["label"]) for r in ds]  # fmt: skip
    (_, (l0, r0)), (_, (l1, r1)), (_, (l2, r2)) = picks
    assert got == [(l0, r0, 1.0), (l1, r1, 0.5), (r2, l2, 1.0)]  # as the page showed them
    assert all(len(r["images"]) == 1 for r in ds)
    cmd = [sys.executable, "-m", "mmalign.cli", "train", "configs/toy/vlm_dpo.yaml",
           f"data={out}", "train.max_steps=1", "train.batch_size=3",
           f"output_dir={tmp_path / 'run'}"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=600, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "adapter").is_dir()
