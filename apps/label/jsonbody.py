"""JSON request bodies with a cap on nesting.

`json.loads` raises RecursionError, not ValueError, on a body nested past Python's
recursion limit (`[[[[...` 200,000 deep is 400 KB), which the routes' `except ValueError`
let through as a 500. A body that parses here can still be too deep for the parsers after
it (Gradio's own `json.loads` runs deeper in the stack, then pydantic), so nesting is
capped well below the limit: no request of this app nests more than a few levels.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64


class TooDeep(ValueError):
    """A JSON body nested deeper than `MAX_DEPTH`."""


def parse_json(body: bytes | str) -> Any:
    """`json.loads(body)`; ValueError when it is not JSON, TooDeep (a ValueError too)
    when it nests deeper than `MAX_DEPTH`."""
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
