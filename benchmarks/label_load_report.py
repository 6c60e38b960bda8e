"""The tables `benchmarks/label_load.py` prints at the end of a run: every run's latency,
throughput and check; PostgreSQL beside SQLite; the login flood's p99 against the quiet
run's; and the 32-annotator target. That file's docstring says what the runs are.
"""

from __future__ import annotations


def _num(x: float | None, width: int) -> str:
    """`x` to one decimal, or "-" where a run had no vote to measure (all of them failed)."""
    return f"{'-' if x is None else f'{x:.1f}':>{width}}"


def report(runs: list[dict]) -> None:
    """Print the tables for `runs` (the JSON's `runs`); a flooded run gets `p99_over_quiet`,
    its p99 over the quiet run's of the same client, level and database."""
    print(f"\n{'client':14} {'db':>10} {'phase':>12} {'annot.':>6} {'votes':>6} {'p50 ms':>8} "
          f"{'p99 ms':>8} "
          f"{'votes/s':>8} {'srv cpu ms':>10} {'store p50':>9} {'store v/s':>9} {'lost':>5} "
          f"{'wrong':>5}")  # fmt: skip
    for r in runs:
        b, c = r["baseline_store"], r["check"]
        cpu = r["server_cpu_ms_per_vote"]
        print(f"{r['client']:14} {r['db']:>10} {r['phase']:>12} {r['annotators']:>6} "
              f"{r['votes']:>6} {_num(r['p50_ms'], 8)} {_num(r['p99_ms'], 8)} "
              f"{_num(r['votes_per_s'], 8)} "
              f"{'-' if cpu is None else f'{cpu:.2f}':>10} {b['p50_ms']:>9.2f} "
              f"{b['votes_per_s']:>9.0f} {c['missing']:>5} {c['wrong_annotator']:>5}")  # fmt: skip
    _side_by_side(runs)
    quiet = {(r["client"], r["annotators"], r["db"]): r for r in runs
             if r["phase"] == "quiet"}  # fmt: skip
    for r in runs:
        q = quiet.get((r["client"], r["annotators"], r["db"]))
        if r["phase"] == "quiet" or not q or not r["p99_ms"] or not q["p99_ms"]:
            continue
        ratio = r["p99_ms"] / q["p99_ms"]
        r["p99_over_quiet"] = ratio
        verdict = "PASS" if ratio <= 2 else "MISS"
        print(f"login flood ({r['phase']}, {r['client']} x{r['annotators']}, {r['db']}): vote p50 "
              f"{q['p50_ms']:.1f} -> {r['p50_ms']:.1f} ms, p99 {q['p99_ms']:.1f} -> "
              f"{r['p99_ms']:.1f} ms ({ratio:.2f}x, target <= 2x: {verdict}); logins answered "
              f"{r['login_flood']['answers']}")  # fmt: skip
    at32 = [r for r in runs if r["annotators"] == 32 and r["phase"] == "quiet"]
    for r in at32:
        p99 = r["p99_ms"]
        verdict = "PASS" if p99 is not None and p99 <= 50 else "MISS"
        print(f"target p99 <= 50 ms at 32 annotators ({r['client']}, {r['db']}): "
              f"{_num(p99, 0)} ms {verdict}")  # fmt: skip


def _side_by_side(runs: list[dict]) -> None:
    """PostgreSQL's p50 / p99 / votes/s beside SQLite's, per client, phase and level."""
    by = {(r["client"], r["phase"], r["annotators"], r["db"]): r for r in runs}
    keys = sorted({k[:3] for k in by}, key=lambda k: (k[0], k[1], k[2]))
    if not any((*k, "postgresql") in by and (*k, "sqlite") in by for k in keys):
        return
    print(f"\n{'client':14} {'phase':>12} {'annot.':>6} | {'SQLite p50':>10} {'p99':>7} "
          f"{'votes/s':>8} | {'PostgreSQL p50':>14} {'p99':>7} {'votes/s':>8}")  # fmt: skip
    for k in keys:
        cells = []
        for db in ("sqlite", "postgresql"):
            r = by.get((*k, db))
            cells.append("-" if r is None else f"{_num(r['p50_ms'], 0)} ms "
                         f"{_num(r['p99_ms'], 0)} ms {_num(r['votes_per_s'], 0)}/s")  # fmt: skip
        print(f"{k[0]:14} {k[1]:>12} {k[2]:>6} | {cells[0]:>28} | {cells[1]:>32}")
