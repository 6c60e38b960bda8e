"""`Loss`: a registered loss function with what the rest of mmalign needs to know about it."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..suggest import did_you_mean
from .scores import LossOutput, PairScores


@dataclass(frozen=True)
class Loss:
    """A loss in the `LOSSES` registry.

    Calling it validates the arguments and the scores, then runs the function:
    `LOSSES["dpo"](scores, beta=0.1) -> LossOutput`.
    """

    fn: Callable[..., LossOutput]
    paper: str
    reference_free: bool = False
    uses_label: bool = False  # reads PairScores.label (soft preferences)
    _warned: set[str] = field(default_factory=set, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.fn.__name__

    @property
    def defaults(self) -> dict[str, Any]:
        """The loss's hyperparameters and their defaults."""
        return {
            p.name: p.default
            for p in inspect.signature(self.fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }

    def check_kwargs(self, kwargs: dict[str, Any]) -> None:
        valid = self.defaults
        for key in kwargs:
            if key not in valid:
                raise ValueError(
                    f"loss '{self.name}' has no argument '{key}'; {did_you_mean(key, valid)}"
                )

    def __call__(self, scores: PairScores, **kwargs: Any) -> LossOutput:
        self.check_kwargs(kwargs)
        scores.validate(need_reference=not self.reference_free, loss_name=self.name)
        if scores.label is not None and not self.uses_label and "label" not in self._warned:
            self._warned.add("label")
            warnings.warn(
                f"loss '{self.name}' ignores soft labels (PairScores.label); use dpo, "
                "smpo, or filter the ties in the data",
                stacklevel=2,
            )
        return self.fn(scores, **kwargs)
