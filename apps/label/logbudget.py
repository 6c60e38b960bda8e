"""The server's log, bounded per user: what a signed-in user's requests make the server write.

Every line the app writes about a request goes through `LogBudget.write`: at most `lines`
lines per user (anonymous requests share one budget) per `window_s` seconds; the rest are
counted and the count goes out with the user's next line. An unexpected exception is one
short line (`error`) and its stack trace only the first time its kind and place are seen
(`traces` places at most), so a bug stays diagnosable while one account repeating the
request that hits it cannot grow the log without bound. Text from requests (names,
exception messages) is written with its control characters escaped and cut at `WIDTH`
characters, so no request writes terminal escapes or carriage returns into the log.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TextIO

LINES = 20  # per user per window
WINDOW_S = 60.0
WIDTH = 300  # characters of one line
_ANONYMOUS = "-"


def clean(text: str, width: int = WIDTH) -> str:
    """`text` on one line: control characters escaped, at most `width` characters."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return out if len(out) <= width else out[: width - 3] + "..."


class LogBudget:
    """See the module docstring. `stream`: where lines go (default: `sys.stderr` when
    written, so a test's capture sees them)."""

    def __init__(self, lines: int = LINES, window_s: float = WINDOW_S, *, traces: int = 32,
                 stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.lines, self.window_s, self.traces = lines, window_s, traces
        self.stream, self.clock = stream, clock
        self._spent: dict[str, list[float]] = {}  # user -> [window start, lines, left out]
        self._traced: set[tuple[str, str, int]] = set()
        self._lock = threading.Lock()  # written from the event loop and worker threads

    def write(self, user: str | None, text: str) -> bool:
        """Write `text` (a line; a stack trace after its first line) for `user`'s request;
        False when the user's budget for this window is spent (the line is counted)."""
        key = user or _ANONYMOUS
        now = self.clock()
        note = ""
        with self._lock:
            spent = self._spent.get(key)
            if spent is None or now - spent[0] >= self.window_s:
                left_out = int(spent[2]) if spent else 0
                spent = self._spent[key] = [now, 0, 0]
                if len(self._spent) > 4096:  # users whose window ended: forget them
                    for k in [k for k, s in self._spent.items() if now - s[0] >= self.window_s]:
                        del self._spent[k]
                    self._spent[key] = spent
                if left_out:
                    note = f" ({left_out} earlier lines about {clean(key, 80)} left out)"
            if spent[1] >= self.lines:
                spent[2] += 1
                return False
            spent[1] += 1
        first, *rest = text.split("\n")
        out = "\n".join([clean(first) + note, *(clean(line, 1000) for line in rest)])
        print(out, file=self.stream or sys.stderr, flush=True)
        return True

    def error(self, user: str | None, where: str, err: BaseException) -> bool:
        """One line for an unexpected exception in `where` (a route, a handler), with its
        stack trace the first time this kind of exception is seen at this place."""
        frames = traceback.extract_tb(err.__traceback__)
        file, line = (frames[-1].filename, frames[-1].lineno or 0) if frames else ("", 0)
        place = (type(err).__name__, file, line)
        text = clean(
            f"label: {where} failed for {user or 'an anonymous request'}: "
            f"{type(err).__name__}: {err}"
        )  # one line: its newlines escaped
        with self._lock:
            trace = place not in self._traced and len(self._traced) < self.traces
            if trace:
                self._traced.add(place)
        if trace:
            text += "\n" + "".join(traceback.format_exception(err)).rstrip("\n")
        return self.write(user, text)


LOG = LogBudget()  # the server's
