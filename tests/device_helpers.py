"""Shared by the device tests: loaders replaced by recorders that stop the command (the
`pretend_cuda` fixture, a torch that says it has a GPU, is in conftest.py)."""

from __future__ import annotations

from typing import Any


class Stop(Exception):
    """Raised by a recording loader: the command got as far as loading its model."""


def recorder(calls: list[dict[str, Any]], result: Any = None, stop: bool = True):
    """A loader that appends its arguments to `calls`, then raises `Stop` (or returns `result`
    with `stop=False`)."""

    def record(*args: Any, **kwargs: Any) -> Any:
        calls.append({"args": args, **kwargs})
        if stop:
            raise Stop
        return result

    return record
