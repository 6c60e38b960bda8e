"""Screenshots of the labeling page and the admin page in headless Chromium.

    python -m mmalign_label.screenshots --out apps/label/screenshots

Builds a small shapes dataset with gold pairs, launches the app, has three annotators vote
(two through the store, one in the browser with the keyboard) and saves `label.png` and
`admin.png`; then a VLM response-pair run (`--vlm`) for `vlm.png`.
Uses Debian's Chromium (`/usr/bin/chromium`) through Playwright.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import uuid
from pathlib import Path

from .browser import CHROMIUM, login, wait_shown
from .gold import add_gold
from .store import Store
from .testing import make_pairs_dataset, serve
from .users import add_user


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="apps/label/screenshots")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="label_shots_"))
    data = make_pairs_dataset(work / "pairs", 24, size=256, seed=3)
    users = work / "users.txt"
    for name in ("maria", "kenji"):
        add_user(users, name, f"pw-{name}")
    add_user(users, "lead", "pw-lead", "admin")
    db = work / "labels.sqlite"
    with serve(["--data", str(data), "--users", str(users), "--db", str(db), "--overlap", "3",
                "--gold-rate", "0.3"], log=work / "server.log") as server:  # fmt: skip
        store = Store(db)
        add_gold(store, make_pairs_dataset(work / "gold", 8, size=256, seed=9),
                 str(db) + ".images")  # fmt: skip
        rng = random.Random(0)
        for name, bias in (("maria", 0.55), ("kenji", 0.7)):
            for _ in range(14):
                pair = store.next_pair(name)
                assert pair is not None
                choice = rng.choices(["left", "right", "tie", "skip"], [bias, 1 - bias, 0.15, 0.05])
                store.record_vote(vote_id=uuid.uuid4().hex, annotator=name, pair_id=pair.pair_id,
                                  choice=choice[0], left_image=rng.randrange(2),
                                  decide_ms=rng.randint(1500, 6000))  # fmt: skip
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1360, "height": 960})
            login(page, server.url, "lead", "pw-lead")
            shown = wait_shown(page, 0)
            for key in ("ArrowLeft", "ArrowRight", "ArrowDown", "ArrowLeft"):
                page.keyboard.press(key)
                shown = wait_shown(page, shown["done"] + 1, not_pair=shown["pair"])
            page.screenshot(path=str(out / "label.png"))
            page.get_by_role("tab", name="Admin").click()
            page.locator(".lbl-cards").wait_for(timeout=30_000)
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / "admin.png"), full_page=True)
            browser.close()
    _vlm_shot(work, users, out)
    print(f"screenshots: {out / 'label.png'}, {out / 'admin.png'}, {out / 'vlm.png'}")


def _vlm_shot(work: Path, users: Path, out: Path) -> None:
    """The VLM mode: an image and a question above two answers, one of them wrong."""
    from playwright.sync_api import sync_playwright

    from mmalign.data.schema import load_pairs

    rows = []
    for i, row in enumerate(load_pairs(make_pairs_dataset(work / "vlm_src", 4, size=256, seed=5))):
        row["chosen"].save(work / f"vlm{i}.png")
        color, shape = row["prompt"].split()[1:3]
        wrong = next(c for c in ("green", "purple", "yellow") if c != color)
        rows.append({"prompt": "What is the shape in the picture, and what colour is it?",
                     "image": f"vlm{i}.png",
                     "response_0": f"It is a {color} {shape}, drawn on a plain background.",
                     "response_1": f"A {wrong} {shape}. It sits near the middle."})  # fmt: skip
    data = work / "vlm.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    db = work / "vlm.sqlite"
    with serve(["--vlm", "--data", str(data), "--users", str(users), "--db", str(db)],
               log=work / "vlm_server.log") as server, sync_playwright() as p:  # fmt: skip
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1360, "height": 1020})
        login(page, server.url, "maria", "pw-maria")
        shown = wait_shown(page, 0, vlm=True)
        page.keyboard.press("ArrowLeft")
        wait_shown(page, 1, not_pair=shown["pair"], vlm=True)
        page.screenshot(path=str(out / "vlm.png"), full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
