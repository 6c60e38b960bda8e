"""The HTML and table rows the labeling page shows: the progress bar, the prompt, and the
admin tab's cards and tables. Prompts and notes are HTML-escaped."""

from __future__ import annotations

import html
from typing import Any


def progress_html(done: int, total: int) -> str:
    share = 100.0 * done / total if total else 100.0  # an empty queue reads as finished
    return (
        f'<div class="lbl-progress" data-done="{done}" data-total="{total}">'
        f'<div class="lbl-bar"><div class="lbl-fill" style="width:{share:.1f}%"></div></div>'
        f'<div class="lbl-text">{done} of {total} pairs in your queue</div></div>'
    )


# The bar before the page knows the queue: empty, not "0 of 0" (a full bar). Gradio patches
# the HTML in place, so the fill keeps its element and the CSS transition animates every
# width change: a full placeholder swept down to 0 on load and back up on the first votes.
PROGRESS_LOADING = (
    '<div class="lbl-progress"><div class="lbl-bar"><div class="lbl-fill" style="width:0%">'
    '</div></div><div class="lbl-text">Loading your queue …</div></div>'
)


def prompt_html(prompt: str | None, note: str = "", pair_id: str = "") -> str:
    if prompt is None:
        return f'<div id="lbl-prompt">{html.escape(note or "Nothing left to label")}</div>'
    muted = f'<span class="lbl-muted">{html.escape(note)}</span>' if note else ""
    # the shown pair's id (not secret: the API hands it out): the page says which pair it shows
    shown = html.escape(pair_id, quote=True)
    return f'<div id="lbl-prompt" data-pair-id="{shown}">{muted}{html.escape(prompt)}</div>'


def admin_view(stats: dict[str, Any]) -> tuple[str, list[list[Any]], list[list[Any]]]:
    """The admin tab from `stats.summarize`: summary cards (HTML), one row per annotator,
    one row per pair of annotators (Cohen's kappa)."""
    people = [[a["annotator"], a["votes"], a["left"], a["right"], a["tie"],
               a.get("both_bad", 0), a["skip"],
               _fmt(a["left_share"], "{:.1%}"), _fmt(a["median_s"], "{:.2f}"),
               _fmt(a["mean_s"], "{:.2f}")] for a in stats["annotators"]]  # fmt: skip
    kappas = [
        [c["annotator_a"], c["annotator_b"], c["shared"], _fmt(c["cohen_kappa"], "{:.3f}")]
        for c in stats["cohen"]
    ]
    cards = (
        f"<div class='lbl-cards'>"
        f"<div><b>{stats['votes']}</b><span>votes</span></div>"
        f"<div><b>{len(stats['annotators'])}</b><span>annotators</span></div>"
        f"<div><b>{_fmt(stats['fleiss_kappa'], '{:.3f}')}</b><span>Fleiss' κ "
        f"({stats['overlapping_pairs']} overlapping pairs)</span></div>"
        f"<div><b>{_fmt(stats['left_share'], '{:.1%}')}</b><span>left votes "
        f"(position bias; 50% = none)</span></div>"
        f"<div><b>{_fmt(stats['median_s'], '{:.2f} s')}</b><span>median time per vote</span>"
        f"</div></div>"
    )
    return cards, people, kappas


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else spec.format(value)
