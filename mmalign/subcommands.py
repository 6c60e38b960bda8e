"""The one place a CLI group (`mmalign data ...`) is created and extended.

Several packages add actions to the same group (`data show`, `data smooth` and `data
user-embed` from `mmalign.data_cli`, `data realign` from `mmalign.vlm.data`,
`data prism-mcts` and `data prism-import` from `mmalign.vlm.prism.cli`, `data diagnose` from
`mmalign.vlm.diagnose_cli`); whichever registers first creates it.
"""

from __future__ import annotations

import argparse
from typing import Any

GROUP_HELP = {"data": "dataset cards; build, convert and check preference datasets"}


def group_actions(sub: Any, name: str) -> Any:
    """The sub-parsers of group `name` under `sub` (the `mmalign` sub-parsers), created once."""
    group = sub.choices.get(name)
    if group is None:
        group = sub.add_parser(name, help=GROUP_HELP.get(name, ""))
        group.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)
    return next(a for a in group._actions if isinstance(a, argparse._SubParsersAction))
