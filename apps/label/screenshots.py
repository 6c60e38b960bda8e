"""Screenshots of the labeling page and the admin page in headless Chromium.

    python -m apps.label.screenshots --out apps/label/screenshots

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

from .store import Store
from .testing import make_pairs_dataset, serve
from .users import add_user

CHROMIUM = "/usr/bin/chromium"


def login(page, url: str, user: str, password: str) -> None:
    page.goto(url)
    page.locator("input[type=text]").first.fill(user)
    page.locator("input[type=password]").first.fill(password)
    page.get_by_role("button", name="Login").click()
    page.locator("#lbl-left").wait_for(timeout=60_000)
    page.locator(".lbl-img img").first.wait_for(timeout=60_000)


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
            for key in ("ArrowLeft", "ArrowRight", "ArrowDown", "ArrowLeft"):
                before = page.locator(".lbl-progress").get_attribute("data-done")
                page.keyboard.press(key)
                page.wait_for_function(
                    f"document.querySelector('.lbl-progress').dataset.done !== '{before}'"
                )
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / "label.png"))
            page.get_by_role("tab", name="Admin").click()
            page.locator(".lbl-cards").wait_for(timeout=30_000)
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / "admin.png"), full_page=True)
            browser.close()
    print(f"screenshots: {out / 'label.png'}, {out / 'admin.png'}")


if __name__ == "__main__":
    main()
