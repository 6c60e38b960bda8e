"""Gradio API calls checked before Gradio parses them: the event a call names must exist and
get all its inputs.

Gradio finds the event by `fn_index` (the body of `/run/{name}`, `/api/{name}` and
`/queue/join`) or else by API name (`/run/{name}`, `/api/{name}`, `/call/{name}`), and
fails on one it does not have with a `KeyError`: a 500 answer and a stack trace of some
5 KiB in the server's log, for any signed-in user to send without end. An event sent fewer
inputs than it takes fails the same way (Gradio's `validate_inputs`), on the queue too.
`Endpoints.refusal` answers such a call first: 404 for an event the app does not have, 422
for missing inputs or an `fn_index` that is not a whole number. (`/call/v2/...`, which
fails the same way on a keyword it does not know, is closed: `guard.py`.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .logbudget import clean

API = "/gradio_api"
_DIRECT = re.compile(rf"^{API}/(?:run|api)/(?P<name>[^/]+)$")
_SIMPLE = re.compile(rf"^{API}/call/(?P<name>[^/]+)$")
_JOIN = f"{API}/queue/join"


@dataclass(frozen=True)
class Event:
    """What a call of one event must send: `inputs` values, or for `/call/` `api_inputs`
    (Gradio fills in the inputs that are page state, `skip_api`)."""

    name: str
    inputs: int
    api_inputs: int


def _whole(value: Any) -> int | None:
    """`fn_index` as Gradio's parser (pydantic, lax) reads it; None when it is no number."""
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


class Endpoints:
    """The events of one Gradio app (`of(blocks)`), by `fn_index` and by API name."""

    def __init__(self, events: dict[int, Event]) -> None:
        self.events = events
        self.names: dict[str, int] = {}
        for index, event in events.items():
            if event.name:
                self.names.setdefault(event.name, index)  # Gradio takes the first of a name

    @classmethod
    def of(cls, blocks: Any) -> Endpoints:
        events: dict[int, Event] = {}
        for index, fn in blocks.fns.items():
            api_inputs = sum(not block.skip_api for block in fn.inputs)
            events[index] = Event(fn.api_name or "", len(fn.inputs), api_inputs)
        return cls(events)

    def refusal(self, method: str, path: str, body: Any) -> tuple[int, str] | None:
        """(status, why) for a call Gradio would fail on with a stack trace; None for every
        other request (`body`: its parsed JSON; Gradio answers malformed ones with 422)."""
        if method != "POST" or not isinstance(body, dict):
            return None
        simple = _SIMPLE.match(path)
        direct = _DIRECT.match(path)
        if not (simple or direct or path == _JOIN):
            return None
        data = body.get("data")
        if not isinstance(data, list):
            return None  # Gradio's own 422
        raw = None if simple else body.get("fn_index")
        if raw is not None:
            index = _whole(raw)
            if index is None:
                return 422, "fn_index must be a whole number"
            if index not in self.events:
                return 404, f"this app has no event with fn_index {index}"
            what = f"fn_index {index}"
        elif path == _JOIN:
            if body.get("session_hash") is None:
                return None  # Gradio's own 400, "Session hash not found"
            return 422, "fn_index is missing"
        else:
            name = (simple or direct)["name"]  # type: ignore[index]
            if name not in self.names:
                return 404, f"this app has no API endpoint named '{clean(name, 100)}'"
            index, what = self.names[name], f"/{name}"
        event = self.events[index]
        if len(data) < event.inputs and not (simple and len(data) == event.api_inputs):
            wanted = event.api_inputs if simple else event.inputs
            return 422, f"{what} takes {wanted} inputs, got {len(data)}"
        return None
