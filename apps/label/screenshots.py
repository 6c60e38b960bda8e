"""Screenshots of the labeling page and the admin page in headless Chromium.

    python -m mmalign_label.screenshots --out apps/label/screenshots

Builds a small shapes dataset, launches the app, has three annotators vote (two through
the store, one in the browser with the keyboard) and saves `label.png` and `admin.png`.
Uses Debian's Chromium (`/usr/bin/chromium`) through Playwright.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import uuid
from pathlib import Path

from .browser import CHROMIUM, login, wait_shown
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
    with serve(["--data", str(data), "--users", str(users), "--db", str(db), "--overlap", "3"],
               log=work / "server.log") as server:  # fmt: skip
        store = Store(db)
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
    print(f"screenshots: {out / 'label.png'}, {out / 'admin.png'}")


if __name__ == "__main__":
    main()
