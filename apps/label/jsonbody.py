"""JSON request bodies with a cap on nesting.

`json.loads` raises RecursionError, not ValueError, on a body nested past Python's
recursion limit (`[[[[...` 200,000 deep is 400 KB), which the routes' `except ValueError`
let through as a 500. A body that parses here can still be too deep for the parsers after
it (Gradio's own `json.loads` runs deeper in the stack, then pydantic), so nesting is
capped well below the limit: no request of this app nests more than a few levels.

The number of values is capped too, from the raw bytes before anything is parsed: the
parse, the depth check and Gradio's own parse and walk of the same body run on the event
loop, and each list or object left behind brings Python's full garbage collection (about
0.3 s over the server's objects) nearer, so a signed-in client sending 1 MiB bodies of
`[[],[],...]` from 4 connections held every other request for seconds. A vote or a Gradio
event has a few dozen values.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64
# `[`, `{` and `,` in a body (inside strings too: counting them needs no parse); every value
# past the first is one of them
MAX_ITEMS = 1024


class Refused(ValueError):
    """A JSON body refused before or after parsing (answered 400 with its message)."""


class TooDeep(Refused):
    """A JSON body nested deeper than `MAX_DEPTH`."""


class TooMany(Refused):
    """A JSON body with more than `MAX_ITEMS` values."""


def parse_json(body: bytes | str) -> Any:
    """`json.loads(body)`; ValueError when it is not JSON, Refused (a ValueError too: TooMany
    or TooDeep) when it has more than `MAX_ITEMS` values or nests deeper than `MAX_DEPTH`."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if raw.count(b"[") + raw.count(b"{") + raw.count(b",") > MAX_ITEMS:
        # a body this big in values is refused unparsed, whether it is wide or deep
        raise TooMany(f"the JSON body has more than {MAX_ITEMS} values or nests deeper "
                      f"than {MAX_DEPTH} levels")  # fmt: skip
    try:
        data = json.loads(body)
    except RecursionError as err:
        raise TooDeep(f"the JSON body nests deeper than {MAX_DEPTH} levels") from err
    if _deeper_than(data, MAX_DEPTH):
        raise TooDeep(f"the JSON body nests deeper than {MAX_DEPTH} levels")
    return data


def _deeper_than(data: Any, limit: int) -> bool:
    stack = [(data, 1)]  # iterative: the check itself must not recurse
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
