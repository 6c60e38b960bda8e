"""The shipped toy models' names (`toy:sd`, ...) and the kind of model each is.

A leaf module: `hub.problem` reads the names to tell a mistyped toy name from a missing
folder, and `model_kind` reads the kinds; `model_kind` imports `hub` (its cache lookups), so
the table cannot live in either without an import cycle.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["diffusion", "vlm", "reward"]
TOY: dict[str, Kind] = {
    "toy:sd": "diffusion", "toy:flow": "diffusion", "toy:vlm": "vlm", "toy:dense": "reward",
}  # fmt: skip
