"""What the two HTML reports of `mmalign data diagnose` share: the page's head (title, styles,
the data's name and the summary) and a table of plain values, every one HTML-escaped.

The VLM report (mmalign/vlm/diagnose_html.py) and the diffusion one
(mmalign/eval/diagnose_diffusion.py) sit in packages that do not import each other, so the
shared part lives here, below both. Prompts and answers are user text: anything shown is
escaped, so a prompt holding markup shows as text and runs nothing.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from typing import Any

STYLE = (
    "<style>body{font-family:sans-serif;margin:2em}td{vertical-align:top;"
    "padding:4px 8px;border-bottom:1px solid #ddd}pre{white-space:pre-wrap}</style>"
)


def page_head(summary: dict[str, Any]) -> list[str]:
    """The opening parts of a diagnose report: doctype, title, styles, a heading naming
    `summary["data"]` and the summary as indented JSON."""
    esc = html.escape
    return [
        "<!doctype html><meta charset='utf-8'><title>mmalign data diagnose</title>",
        STYLE,
        f"<h1>Preference-data diagnostics: {esc(str(summary.get('data')))}</h1>",
        f"<pre>{esc(json.dumps(summary, indent=2))}</pre>",
    ]


def cell(value: Any) -> str:
    """One value as table text: floats to 4 significant digits, anything else as `str`,
    escaped."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def value_table(columns: Sequence[str], records: Iterable[Sequence[Any]]) -> str:
    """An HTML table with `columns` as its header and one row per record, each value escaped
    (`cell`)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = ["<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in records]
    return "\n".join([f"<table><tr>{head}</tr>", *body, "</table>"])
