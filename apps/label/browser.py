"""Driving the labeling page in Chromium (Playwright): sign in, and wait for what the
annotator sees. Shared by the browser test and the screenshots.

Waits are on the page's state, never on time: the progress text, the shown pair's id
(`data-pair-id` on the prompt) and a progress bar at rest. Gradio patches the page's HTML
in place, so the bar's fill keeps its element and its CSS `transition: width` animates
every change: its width is final only once its animations have finished.
"""

from __future__ import annotations

from typing import Any, TypedDict

CHROMIUM = "/usr/bin/chromium"  # Debian's build (`make chromium`)
WAIT_MS = 30_000

# True once the page shows `done` of `total` (any total when null), a pair whose id is not
# `notPair` (when given) and is `pair` (when given), its images loaded (two; in VLM mode the
# one above the two responses, which must be there), and a progress fill that has stopped.
_SHOWN = """([done, total, notPair, pair, vlm]) => {
  const text = document.querySelector('.lbl-progress .lbl-text');
  const fill = document.querySelector('.lbl-progress .lbl-fill');
  const prompt = document.querySelector('#lbl-prompt');
  const images = Array.from(document.querySelectorAll(vlm ? '.lbl-top img' : '.lbl-img img'));
  if (!text || !fill || !prompt || images.length !== (vlm ? 1 : 2)) return false;
  if (vlm && document.querySelectorAll('.lbl-resp .lbl-resp-text').length !== 2) return false;
  if (!images.every((i) => i.complete && i.naturalWidth > 0)) return false;
  const m = /^(\\d+) of (\\d+) pairs in your queue$/.exec(text.textContent.trim());
  const id = prompt.dataset.pairId || '';
  return m !== null && Number(m[1]) === done && (total === null || Number(m[2]) === total)
    && id !== '' && (notPair === null || id !== notPair) && (pair === null || id === pair)
    && fill.getAnimations().length === 0;
}"""

_READ = """() => {
  const m = /^(\\d+) of (\\d+)/.exec(document.querySelector('.lbl-progress .lbl-text')
    .textContent.trim());
  const fill = document.querySelector('.lbl-progress .lbl-fill').getBoundingClientRect();
  const bar = document.querySelector('.lbl-progress .lbl-bar').getBoundingClientRect();
  const texts = Array.from(document.querySelectorAll('.lbl-resp .lbl-resp-text'))
    .map((e) => e.textContent);
  return {done: Number(m[1]), total: Number(m[2]), share: fill.width / bar.width,
          pair: document.querySelector('#lbl-prompt').dataset.pairId || '', responses: texts};
}"""


class Shown(TypedDict):
    """What the labeling page shows: progress (`share`: the bar's filled fraction)."""

    done: int
    total: int
    share: float
    pair: str
    responses: list[str]  # VLM mode: the left and right responses as shown


def login(page: Any, url: str, user: str, password: str) -> None:
    """Sign in through Gradio's login form and wait for the first pair's images."""
    page.goto(url)
    page.locator("input[type=text]").first.fill(user)
    page.locator("input[type=password]").first.fill(password)
    page.get_by_role("button", name="Login").click()
    page.locator("#lbl-left").wait_for(timeout=60_000)
    page.locator(".lbl-img img, .lbl-top img").first.wait_for(timeout=60_000)


def wait_shown(
    page: Any, done: int, *, total: int | None = None, not_pair: str | None = None,
    pair: str | None = None, timeout_ms: int = WAIT_MS, vlm: bool = False,
) -> Shown:  # fmt: skip
    """Wait until the page shows `done` votes (of `total`), a pair other than `not_pair`
    (or exactly `pair`) with both its images, and a progress bar at rest; returns what it
    shows then."""
    page.wait_for_function(_SHOWN, arg=[done, total, not_pair, pair, vlm], timeout=timeout_ms)
    shown: Shown = page.evaluate(_READ)
    return shown
