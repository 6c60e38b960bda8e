"""The ratios `benchmarks/diffusion_step.py` checks against the project's acceptance targets,
each computed from one run's own numbers, and the tables it prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Ratio:
    """`metric(numerator) / metric(denominator)`; `{t}` in a name stands for lora or full."""

    name: str
    numerator: str
    denominator: str
    metric: Literal["s_per_step", "peak_mb", "train_rss_mb"]
    target: float | None
    op: Literal["<=", "<", ">="] = "<="


RATIOS = [
    Ratio("MaPO/DPO time (cache)", "ours-mapo-{t}-cache", "ours-dpo-{t}-cache", "s_per_step", 0.75),
    Ratio(
        "MaPO/DPO time (encode)", "ours-mapo-{t}-encode", "ours-dpo-{t}-encode", "s_per_step", 0.75
    ),
    Ratio("MaPO/DPO peak (cache)", "ours-mapo-{t}-cache", "ours-dpo-{t}-cache", "peak_mb", 1, "<"),
    Ratio(
        "MaPO/DPO peak (encode)", "ours-mapo-{t}-encode", "ours-dpo-{t}-encode", "peak_mb", 1, "<"
    ),
    # On CPU the peak RSS is mostly the libraries (the same in every child), which pulls every
    # peak ratio towards 1; the same ratio over the RSS the run added shows the difference.
    Ratio(
        "MaPO/DPO +run MB (cache)",
        "ours-mapo-{t}-cache",
        "ours-dpo-{t}-cache",
        "train_rss_mb",
        1,
        "<",
    ),
    Ratio(
        "MaPO/DPO +run MB (encode)",
        "ours-mapo-{t}-encode",
        "ours-dpo-{t}-encode",
        "train_rss_mb",
        1,
        "<",
    ),
    # ImageDoctor's dense weighting: the heatmaps are computed once, so a step only looks up
    # its rows' weights and multiplies the squared error.
    Ratio(
        "dense-DPO/DPO time (cache)",
        "ours-dense-dpo-{t}-cache",
        "ours-dpo-{t}-cache",
        "s_per_step",
        1.1,
    ),
    Ratio(
        "dense-DPO/DPO time (encode)",
        "ours-dense-dpo-{t}-encode",
        "ours-dpo-{t}-encode",
        "s_per_step",
        1.1,
    ),
    # SmPO-Diffusion: the ReNoise inversion adds no-grad UNet forwards before the scored one
    # (their count is printed beside these rows); no target.
    Ratio("SmPO/DPO time (cache)", "ours-smpo-{t}-cache", "ours-dpo-{t}-cache", "s_per_step", None),
    Ratio(
        "SmPO/DPO time (encode)", "ours-smpo-{t}-encode", "ours-dpo-{t}-encode", "s_per_step", None
    ),
    Ratio("SmPO/DPO peak (cache)", "ours-smpo-{t}-cache", "ours-dpo-{t}-cache", "peak_mb", None),
    Ratio(
        "SmPO/DPO +run MB (cache)",
        "ours-smpo-{t}-cache",
        "ours-dpo-{t}-cache",
        "train_rss_mb",
        None,
    ),
    # PPD: the user branch adds 4 user tokens to every cross-attention (issue 22: <= 1.2x).
    Ratio("PPD/DPO time (cache)", "ours-dpo-ppd-cache", "ours-dpo-{t}-cache", "s_per_step", 1.2),
    Ratio("PPD/DPO time (encode)", "ours-dpo-ppd-encode", "ours-dpo-{t}-encode", "s_per_step", 1.2),
    Ratio("PPD/DPO peak (cache)", "ours-dpo-ppd-cache", "ours-dpo-{t}-cache", "peak_mb", None),
    Ratio(
        "cache speed-up DPO", "ours-dpo-{t}-encode", "ours-dpo-{t}-cache", "s_per_step", 1.3, ">="
    ),
    Ratio(
        "cache speed-up MaPO",
        "ours-mapo-{t}-encode",
        "ours-mapo-{t}-cache",
        "s_per_step",
        1.3,
        ">=",
    ),
    # Like for like: both run the encoders every step.
    Ratio(
        "ours/naive time (encode)", "ours-dpo-{t}-encode", "naive-dpo-{t}-encode", "s_per_step", 0.7
    ),
    # What a user of the pre-encoding cache gets against the baseline.
    Ratio(
        "ours/naive time (ours cache)",
        "ours-dpo-{t}-cache",
        "naive-dpo-{t}-encode",
        "s_per_step",
        0.7,
    ),
    Ratio(
        "ours/naive peak (encode)", "ours-dpo-{t}-encode", "naive-dpo-{t}-encode", "peak_mb", None
    ),
]


def verdict(value: float, target: float | None, op: str) -> str:
    if target is None:
        return "-"
    ok = {"<=": value <= target, "<": value < target, ">=": value >= target}[op]
    return "PASS" if ok else "MISS"


def compute_ratios(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every ratio whose two variants ran (and succeeded) in this run."""
    rows = []
    for family, by_variant in results.items():
        for train in ("lora", "full"):
            for r in RATIOS:
                num = by_variant.get(r.numerator.format(t=train), {})
                den = by_variant.get(r.denominator.format(t=train), {})
                if r.metric not in num or r.metric not in den:
                    continue
                value = num[r.metric] / den[r.metric]
                note = ""
                if "renoise_forwards_per_step" in num:
                    note = (
                        f"+{num['renoise_forwards_per_step']:.2f} UNet forwards/step "
                        f"({num['renoise_calls_per_step']:.1f} calls; DPO: 2)"
                    )
                rows.append({
                    "family": family,
                    "train": train,
                    "name": r.name,
                    "numerator": r.numerator.format(t=train),
                    "denominator": r.denominator.format(t=train),
                    "metric": r.metric,
                    "value": value,
                    "target": r.target,
                    "op": r.op,
                    "verdict": verdict(value, r.target, r.op),
                    "note": note,
                })  # fmt: skip
    return rows


def print_tables(
    results: dict[str, dict[str, dict[str, Any]]], ratios: list[dict[str, Any]]
) -> None:
    device = next((r["device"] for v in results.values() for r in v.values() if "device" in r), "?")
    peak = "peak MB (cuda alloc)" if device.startswith("cuda") else "peak MB (RSS)"
    print(f"\n{'family':<6} {'variant':<26} {'s/step':>9} {'min s':>9} {peak:>20} {'+run MB':>8}")
    for family, by_variant in results.items():
        for name, r in by_variant.items():
            if "error" in r:
                print(f"{family:<6} {name:<26} FAILED: {r['error'].splitlines()[-1:]}")
                continue
            print(
                f"{family:<6} {name:<26} {r['s_per_step']:>9.4f} {r['s_per_step_min']:>9.4f} "
                f"{r['peak_mb']:>20.1f} {r['train_rss_mb']:>8.1f}"
            )
    print(f"\n{'family':<6} {'train':<5} {'ratio':<29} {'value':>7} {'target':>8}  verdict")
    for row in ratios:
        target = "-" if row["target"] is None else f"{row['op']} {row['target']:g}"
        print(
            f"{row['family']:<6} {row['train']:<5} {row['name']:<29} {row['value']:>7.3f} "
            f"{target:>8}  {row['verdict']}  {row.get('note', '')}".rstrip()
        )
