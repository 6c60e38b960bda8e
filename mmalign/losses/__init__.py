"""The preference-loss core: pure tensor functions, no model, no I/O.

`LOSSES` is the one registry. Adding a loss = one function, one line in `catalog.py`,
one test with hand-computed numbers.
"""

from .catalog import LOSSES
from .objective import Objective, ObjectiveOutput, Term
from .registry import Loss
from .scores import LossOutput, PairScores

__all__ = [
    "LOSSES",
    "Loss",
    "LossOutput",
    "Objective",
    "ObjectiveOutput",
    "PairScores",
    "Term",
]
