"""The values of a recipe's loss arguments, checked when the config loads.

The loss functions check their own arguments, but only when first called: after the model is
loaded and the data built. Here every term's arguments are checked against the loss's
signature (its keyword defaults give each argument's type) and the ranges below, so
`objective.0.beta=-1` fails at once with the key named.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..config import ConfigError

Rule = tuple[Callable[[float], bool], str]
_POSITIVE: Rule = (lambda v: v > 0, "> 0")
_NONNEGATIVE: Rule = (lambda v: v >= 0, ">= 0")
_UNIT: Rule = (lambda v: 0 <= v <= 1, "in [0, 1]")

# By argument name; (loss, argument) entries refine one loss. Anything numeric not listed here
# must only be a finite number.
RULES: dict[str | tuple[str, str], Rule] = {
    "beta": _POSITIVE,
    "snr": _POSITIVE,
    "num_timesteps": _POSITIVE,
    ("smpo", "gamma"): _POSITIVE,
    ("simpo", "gamma"): _NONNEGATIVE,  # SimPO's target reward margin
    "eps": (lambda v: 0 <= v < 0.5, "in [0, 0.5) (a label flip rate)"),
    "lam": _NONNEGATIVE,
    "alpha": _NONNEGATIVE,
    "lambda_d": _NONNEGATIVE,
    "lambda_u": _NONNEGATIVE,
    "label": _UNIT,
}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _hint(value: Any) -> str:
    """YAML 1.1 reads `1e-3` (no dot) as text; the loss would receive a string."""
    try:
        float(value)
    except (TypeError, ValueError):
        return ""
    return f" (YAML reads {value} as text: write it with a dot, e.g. {float(value)!r})"


def check_term_keys(specs: Sequence[Any], defaults: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise `ConfigError` for a key of a term that is neither a term key (`pair`, `loss`,
    `weight`, `name`) nor an argument of its loss, suggesting the closest of both: a typo of
    `weight` or `loss` was answered with the loss's arguments alone."""
    from ..losses.objective import TERM_KEYS
    from ..suggest import did_you_mean

    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping) or str(spec.get("loss")) not in defaults:
            continue  # Objective.from_config words these
        loss = str(spec["loss"])
        valid = [*TERM_KEYS, *defaults[loss]]
        for key in spec:
            if key not in valid:
                raise ConfigError(
                    f"objective.{i}.{key}: loss '{loss}' has no argument '{key}'; "
                    f"{did_you_mean(str(key), valid)}"
                )


DIFFUSION_PAIRS = ("main",)  # the diffusion and flow scorers (PPD's too): {"main": scores}


def scorer_pairs(kind: str) -> tuple[str, ...] | None:
    """The pairs the scorer of a model.kind produces, which objective terms may read; None
    for `reward`, whose recipe checks its terms itself (reward_model/recipe.py)."""
    if kind == "diffusion":
        return DIFFUSION_PAIRS
    if kind == "vlm":
        from ..vlm.collate import PAIR_FIELDS

        return tuple(PAIR_FIELDS)
    return None


def check_pairs(specs: Sequence[Any], produced: Sequence[str], kind: str) -> None:
    """Raise `ConfigError` naming `objective.<i>.pair` for a pair the scorer of model.kind
    `kind` does not produce (`produced`), with the name probably meant: a typo failed only at
    the first training step, after the model and data had loaded."""
    from ..suggest import did_you_mean

    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping):
            continue  # Objective.from_config words this one
        pair = str(spec.get("pair", "main"))
        if pair not in produced:
            raise ConfigError(
                f"objective.{i}.pair: '{pair}' is not a pair the model.kind {kind} scorer "
                f"produces; {did_you_mean(pair, produced)}"
            )


def check_terms(specs: Sequence[Mapping[str, Any]], defaults: Mapping[str, Mapping[str, Any]]):
    """Raise `ConfigError` naming `objective.<i>.<arg>` for a value of the wrong type or out of
    range. `defaults`: each loss's keyword arguments and defaults (`Loss.defaults`)."""
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping):
            continue  # Objective.from_config words this one
        where = f"objective.{i}"
        weight = spec.get("weight", 1.0)
        if _number(weight) and not weight >= 0:
            raise ConfigError(f"{where}.weight must be >= 0, got {weight}")
        loss = str(spec.get("loss", ""))
        for arg, default in defaults.get(loss, {}).items():
            if arg not in spec:
                continue
            value = spec[arg]
            if _number(default):
                if not _number(value):
                    kind = "an integer" if isinstance(default, int) else "a number"
                    raise ConfigError(
                        f"{where}.{arg} ({loss}) must be {kind}, got {value!r}{_hint(value)}"
                    )
                if isinstance(default, int) and not isinstance(value, int):
                    raise ConfigError(f"{where}.{arg} ({loss}) must be an integer, got {value!r}")
                if not math.isfinite(value):
                    raise ConfigError(f"{where}.{arg} ({loss}) must be finite, got {value}")
            rule = RULES.get((loss, arg)) or RULES.get(arg)
            if rule is not None and _number(value) and not rule[0](value):
                raise ConfigError(f"{where}.{arg} ({loss}) must be {rule[1]}, got {value}")


def diffusion_beta_warnings(
    specs: Sequence[Mapping[str, Any]], defaults: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """A warning per term of a diffusion recipe whose `beta` is the loss's default, written
    or not (a recipe without an objective gets `dpo` with beta 0.1).

    Every diffusion loss but MaPO takes dpo's beta (docs/methods.md, "One beta scale"), which
    multiplies differences of per-pixel squared errors (about 1e-3): the defaults, made for
    language models' log-probabilities (0.1), leave a diffusion model where it started."""
    out = []
    for i, spec in enumerate(specs):
        loss = spec.get("loss") if isinstance(spec, Mapping) else None
        if loss == "mapo" or "beta" not in defaults.get(str(loss), {}):
            continue
        beta = spec.get("beta", defaults[str(loss)]["beta"])
        if beta == defaults[str(loss)]["beta"]:
            out.append(
                f"objective.{i}: {loss} on a diffusion model with beta {beta}, the default made "
                "for language models; diffusion recipes use hundreds to thousands (dpo's beta = "
                "0.5 x a paper's beta_dpo: Diffusion-DPO 1000 for SD1.5, 2500 for SDXL; flow DPO "
                "on SD3.5 50; Diffusion-KTO 1000; docs/methods.md, one beta scale): set "
                f"objective.{i}.beta"
            )
    return out
