"""`Objective`: a weighted sum of loss terms over named pairs.

Diffusion-DPO is one term (`dpo` on `main`); Re-Align rDPO is `dpo` on `main`
plus `dpo` on `visual`; BPO is `dpo` on `main` plus `dpo` on `blind`; RPO is
`dpo` plus `sft` on `main`. A scorer produces `dict[str, PairScores]`, the
objective turns it into one scalar loss and a flat dict of metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ..suggest import did_you_mean
from .catalog import LOSSES
from .scores import LossOutput, PairScores

TERM_KEYS = ("pair", "loss", "weight", "name")


@dataclass(frozen=True)
class Term:
    """One term: `weight * mean_b(pair_weight_b * LOSSES[loss](scores[pair], **kwargs)_b)`."""

    pair: str
    loss: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    name: str = ""  # metrics prefix; "<pair>/<loss>" when empty


@dataclass
class ObjectiveOutput:
    loss: Tensor  # scalar, differentiable
    metrics: dict[str, Tensor]  # scalar, detached: "loss", "<term>/loss", "<term>/<metric>"
    terms: dict[str, LossOutput]  # per-sample outputs by term name


class Objective:
    def __init__(self, terms: Sequence[Term]):
        if not terms:
            raise ValueError("an objective needs at least one term")
        registry = LOSSES
        named: list[Term] = []
        seen: set[str] = set()
        for i, term in enumerate(terms):
            where = f"objective[{i}]"
            if term.loss not in registry:
                raise ValueError(
                    f"{where}.loss: unknown loss '{term.loss}'; {did_you_mean(term.loss, registry)}"
                )
            try:
                registry[term.loss].check_kwargs(dict(term.kwargs))
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            if not math.isfinite(term.weight):
                raise ValueError(f"{where}.weight must be a finite number, got {term.weight}")
            name = term.name or f"{term.pair}/{term.loss}"
            if name in seen:  # the same loss twice on one pair: keep the metrics apart
                name = f"{name}#{i}"
            seen.add(name)
            named.append(Term(term.pair, term.loss, dict(term.kwargs), term.weight, name))
        self.terms: tuple[Term, ...] = tuple(named)

    @classmethod
    def from_config(cls, specs: Sequence[Mapping[str, Any]]) -> Objective:
        """Build from `[{pair: main, loss: dpo, beta: 2500, weight: 1.0}, ...]`.

        `pair` defaults to `main`, `weight` to 1; every other key is an
        argument of the loss.
        """
        terms = []
        for i, spec in enumerate(specs):
            if not isinstance(spec, Mapping):
                raise ValueError(
                    f"objective[{i}] must be a mapping like {{loss: dpo, beta: 0.1}}, got {spec!r}"
                )
            if "loss" not in spec:
                raise ValueError(f"objective[{i}].loss is missing (e.g. loss: dpo)")
            kwargs = {k: v for k, v in spec.items() if k not in TERM_KEYS}
            weight = spec.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise ValueError(f"objective[{i}].weight must be a number, got {weight!r}")
            terms.append(
                Term(
                    pair=str(spec.get("pair", "main")),
                    loss=str(spec["loss"]),
                    kwargs=kwargs,
                    weight=float(weight),
                    name=str(spec.get("name", "")),
                )
            )
        return cls(terms)

    @property
    def needs_reference(self) -> bool:
        """Whether any term needs reference scores (else the scorer skips the reference)."""
        registry = LOSSES
        return any(not registry[t.loss].reference_free for t in self.terms)

    @property
    def pairs(self) -> tuple[str, ...]:
        """The pair names the scorer must produce, in first-use order."""
        return tuple(dict.fromkeys(t.pair for t in self.terms))

    def __call__(
        self, scores: Mapping[str, PairScores], with_metrics: bool = True
    ) -> ObjectiveOutput:
        """The weighted sum of the terms; `with_metrics=False` (a training step that does not
        log) leaves out the per-term metric reductions, keeping `loss` alone."""
        registry = LOSSES
        total: Tensor | None = None
        metrics: dict[str, Tensor] = {}
        outputs: dict[str, LossOutput] = {}
        for term in self.terms:
            if term.pair not in scores:
                raise ValueError(
                    f"objective term '{term.name}' needs pair '{term.pair}' but the scorer "
                    f"produced: {', '.join(scores) or 'nothing'}"
                )
            pair = scores[term.pair]
            out = registry[term.loss](pair, **term.kwargs)
            per_sample = out.loss if pair.weight is None else out.loss * pair.weight
            term_loss = per_sample.mean()
            weighted = term.weight * term_loss
            total = weighted if total is None else total + weighted
            outputs[term.name] = out
            if not with_metrics:
                continue
            metrics[f"{term.name}/loss"] = term_loss.detach()
            for key, value in out.metrics.items():
                metrics[f"{term.name}/{key}"] = value.float().mean()
        assert total is not None
        metrics["loss"] = total.detach()
        return ObjectiveOutput(total, metrics, outputs)

    def __repr__(self) -> str:
        parts = [f"{t.weight:g}*{t.loss}({t.pair}, {dict(t.kwargs)})" for t in self.terms]
        return "Objective(" + " + ".join(parts) + ")"
