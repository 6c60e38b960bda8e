"""`report.html`: a self-contained page (images and plots embedded as base64 PNG) over a win-rate
folder: the win-rate table with 95% CIs, score distributions per scorer, and base vs tuned
side by side for each prompt. `mmalign eval report DIR` re-renders it from the folder's
`results.json`, `per_prompt.jsonl` and `images/`.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

MAX_PROMPTS = 48  # prompts shown side by side; the table and plots use all of them
THUMB = 256  # largest side of an image embedded in the page (shown at 128 px)
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1180px;
color:#1d232b;background:#fafbfc}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid
#d8dee4;padding-bottom:4px}.meta{color:#57606a;font-size:13px}
table{border-collapse:collapse;font-size:14px;background:#fff}
th,td{border:1px solid #d8dee4;padding:5px 10px;text-align:right}th{background:#f3f5f7}
td.l,th.l{text-align:left}.up{color:#1a7f37;font-weight:600}.down{color:#cf222e;font-weight:600}
.plots img{max-width:100%;background:#fff;border:1px solid #d8dee4}
.prompts{display:flex;flex-wrap:wrap;gap:10px}
.prompt{background:#fff;border:1px solid #d8dee4;border-radius:6px;padding:8px 10px;flex:0 0 auto;
max-width:560px}.prompt .t{font-weight:600;font-size:13px;margin-bottom:4px;max-width:290px}
.pair{display:inline-block;margin-right:18px;vertical-align:top}
.cell{display:inline-block;text-align:center;margin:0 3px}
.cell img{width:128px;height:128px;image-rendering:pixelated;border:3px solid transparent;
border-radius:3px}.cell img.win{border-color:#2da44e}.cap{font-size:11px;color:#57606a}
.s{font-size:11px;font-family:ui-monospace,monospace}.s .w{color:#1a7f37;font-weight:700}
"""


def _png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return _png(buf.getvalue())


def _winrate_plot(results: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["scorers"])
    rates = [results["scorers"][n]["win_rate"] * 100 for n in names]
    # at least 0: where every prompt has the same rate, the interval's ends are that rate up to
    # rounding and can lie an ulp past the pooled one; matplotlib refuses a negative bar length
    ci = [results["scorers"][n]["ci95"] for n in names]
    lo = [max(0.0, r - c[0] * 100) for c, r in zip(ci, rates, strict=True)]
    hi = [max(0.0, c[1] * 100 - r) for c, r in zip(ci, rates, strict=True)]
    fig, ax = plt.subplots(figsize=(6.4, 0.55 * len(names) + 1.2))
    colors = ["#2da44e" if r > 50 else "#cf222e" for r in rates]
    ax.barh(names, rates, xerr=[lo, hi], color=colors, alpha=0.8, capsize=4)
    for y, r in enumerate(rates):
        ax.text(min(r, 100) + 1.5, y - 0.25, f"{r:.1f}%", fontsize=9)
    ax.axvline(50, color="#57606a", ls="--", lw=1)
    ax.set_xlim(0, 100)
    ax.set_xlabel("tuned win rate over base (%), 95% bootstrap CI")
    ax.invert_yaxis()
    fig.tight_layout()
    out = _figure_png(fig)
    plt.close(fig)
    return out


def _distribution_plot(name: str, base: list[float], tuned: list[float]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.0))
    bins = 30
    lo, hi = min(base + tuned), max(base + tuned)
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)] if hi > lo else bins
    ax1.hist(base, bins=edges, alpha=0.55, label="base", color="#8c959f")
    ax1.hist(tuned, bins=edges, alpha=0.55, label="tuned", color="#0969da")
    ax1.set_title(f"{name}: scores", fontsize=11)
    ax1.legend(fontsize=9)
    diff = [t - b for b, t in zip(base, tuned, strict=True)]
    ax2.hist(diff, bins=bins, color="#8250df", alpha=0.75)
    ax2.axvline(0, color="#57606a", ls="--", lw=1)
    ax2.set_title(f"{name}: tuned - base, same prompt and seed", fontsize=11)
    fig.tight_layout()
    out = _figure_png(fig)
    plt.close(fig)
    return out


def split_at_ceiling(r: dict[str, Any]) -> bool:
    """Whether a scorer's `win_stats` is shown split at its ceiling (eval/winrate.py): some base
    images reach it and some do not (with none at it, `below_ceiling` repeats the overall win
    rate)."""
    return bool(r.get("below_ceiling")) and r["at_ceiling"]["n"] > 0


def _table(results: dict[str, Any]) -> str:
    head = (
        "<tr><th class=l>scorer</th><th>images</th><th>prompts</th><th>base mean</th>"
        "<th>tuned mean</th><th>base median</th><th>tuned median</th><th>win rate</th>"
        "<th>95% CI</th><th>wins / ties / losses</th></tr>"
    )
    rows = []
    for name, r in results["scorers"].items():
        cls = "up" if r["ci95"][0] > 0.5 else "down" if r["ci95"][1] < 0.5 else ""
        model = r.get("model", name)
        label = html.escape(name) + (f" <span class=cap>({html.escape(model)})</span>"
                                      if model != name else "")  # fmt: skip
        rows.append(
            f"<tr><td class=l>{label}</td><td>{r['n']}</td><td>{r.get('prompts', r['n'])}</td>"
            f"<td>{r['base_mean']:.4f}</td><td>{r['tuned_mean']:.4f}</td>"
            f"<td>{r['base_median']:.4f}</td><td>{r['tuned_median']:.4f}</td>"
            f"<td class={cls or 'n'}>{r['win_rate']:.1%}</td>"
            f"<td>{r['ci95'][0]:.1%} – {r['ci95'][1]:.1%}</td>"
            f"<td>{r['wins']} / {r['ties']} / {r['losses']}</td></tr>"
        )
        if split_at_ceiling(r):  # eval/winrate.py: a perfect base image can only be tied
            c, top = r["below_ceiling"], r["at_ceiling"]
            rows.append(
                f"<tr><td class=l><span class=cap>where the base scores below {top['ceiling']:g}"
                f" ({top['n']} base images at it, {top['lost']} of them lost)</span></td>"
                f"<td>{c['n']}</td><td>{c['prompts']}</td><td colspan=4></td>"
                f"<td>{c['win_rate']:.1%}</td><td>{c['ci95'][0]:.1%} – {c['ci95'][1]:.1%}</td>"
                f"<td>{c['wins']} / {c['ties']} / {c['losses']}</td></tr>"
            )
    return f"<table>{head}{''.join(rows)}</table>"


def _image(path: Path) -> str:
    """The saved image as a data URL, shrunk to at most THUMB px a side (shown at 128): the
    full PNGs of 48 prompts at 1024 px made a page of hundreds of MB. Small images (the toy
    world's 32 px) go in as they are, enlarged by the browser."""
    if not path.is_file():
        return ""
    from PIL import Image

    with Image.open(path) as im:
        if max(im.size) <= THUMB:
            return _png(path.read_bytes())
        return thumbnail_url(im)


def thumbnail_url(image: Any) -> str:
    """A PIL image as a PNG data URL, shrunk to at most THUMB px a side."""
    from PIL import Image

    im = image.convert("RGB")
    im.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return _png(buf.getvalue())


def _prompts_section(out_dir: Path, rows: list[dict[str, Any]], scorers: list[str]) -> str:
    by_prompt: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_prompt[row["prompt_index"]].append(row)
    shown = sorted(by_prompt)[:MAX_PROMPTS]
    first = scorers[0]
    parts = [
        f"<p class=meta>{len(shown)} of {len(by_prompt)} prompts, in order. A green frame marks "
        f"the image {html.escape(first)} prefers; under each image its scores, in green where "
        "it beats the other model's image.</p>"
    ]
    for i in shown:
        pairs = []
        for row in by_prompt[i]:
            s = row["scores"]
            cells = []
            for side in ("base", "tuned"):
                other = "tuned" if side == "base" else "base"
                win = s[first][side] > s[first][other]
                score_lines = "<br>".join(
                    f"<span class={'w' if s[n][side] > s[n][other] else 'n'}>"
                    f"{html.escape(n)} {s[n][side]:.3f}</span>"
                    for n in scorers
                )
                src = _image(out_dir / row[f"{side}_image"])
                cells.append(
                    f"<div class=cell><div class=cap>{side}</div>"
                    f"<img class='{'win' if win else ''}' src='{src}'>"
                    f"<div class=s>{score_lines}</div></div>"
                )
            pairs.append(
                f"<div class=pair><div class=cap>seed {row['seed']}</div>{''.join(cells)}</div>"
            )
        parts.append(
            f"<div class=prompt><div class=t>{i}. {html.escape(by_prompt[i][0]['prompt'])}</div>"
            f"{''.join(pairs)}</div>"
        )
    return parts[0] + "<div class=prompts>" + "".join(parts[1:]) + "</div>"


def render_report(out_dir: str | Path) -> str:
    """The HTML text of a win-rate folder's report."""
    out_dir = Path(out_dir)
    results_path = out_dir / "results.json"
    if not results_path.is_file():
        if not out_dir.is_dir():
            raise FileNotFoundError(f"{out_dir}: no such folder (give the --out folder of "
                                    "`mmalign eval winrate`)")  # fmt: skip
        if (out_dir / "eval" / "results.json").is_file():  # a run folder: its eval is inside
            raise FileNotFoundError(f"{out_dir} has no results.json; did you mean "
                                    f"{out_dir / 'eval'}?")  # fmt: skip
        raise FileNotFoundError(f"{out_dir} has no results.json: run `mmalign eval winrate` first")
    results = json.loads(results_path.read_text())
    per_prompt = out_dir / "per_prompt.jsonl"
    if not per_prompt.is_file():
        raise FileNotFoundError(f"{out_dir} has no per_prompt.jsonl (made by an older version?)")
    rows = [json.loads(line) for line in per_prompt.read_text().splitlines() if line.strip()]
    scorers = list(results["scorers"])
    meta_keys = ("base", "tuned", "prompt_source", "prompts", "seeds_per_prompt", "seed", "steps",
                 "guidance")  # fmt: skip
    meta = " · ".join(
        f"{k}: {html.escape(str(results[k]))}" for k in meta_keys if results.get(k) is not None
    )
    plots = "".join(
        "<img src='{}'>".format(
            _distribution_plot(
                n, [r["scores"][n]["base"] for r in rows], [r["scores"][n]["tuned"] for r in rows]
            )
        )
        for n in scorers
    )
    body = (
        f"<h1>Win rate: tuned vs base</h1><div class=meta>{meta}</div>"
        f"<h2>Win rates</h2>{_table(results)}"
        f"<div class=plots><img src='{_winrate_plot(results)}'></div>"
        f"<p class=meta>The tuned model wins an image when its score is higher for the same prompt "
        f"and seed; ties count half. The interval is a percentile bootstrap over prompts "
        f"(10,000 resamples).</p>"
        f"<h2>Score distributions</h2><div class=plots>{plots}</div>"
        f"<h2>Side by side</h2>{_prompts_section(out_dir, rows, scorers)}"
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>mmalign report</title>"
        f"<style>{CSS}</style></head><body>{body}</body></html>"
    )


def write_report(out_dir: str | Path) -> Path:
    """Render `out_dir/report.html` and return its path."""
    path = Path(out_dir) / "report.html"
    path.write_text(render_report(out_dir))
    return path
