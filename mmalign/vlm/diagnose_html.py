"""The HTML report of `mmalign data diagnose`: summary, histograms of CHES / LN-CHES and the
log-prob margin, and the highest-LN-CHES pairs with their images and texts (one file, images
inlined as PNG).

The histograms need matplotlib, which is in the optional `eval` extra only. Without it the
report is still written, without the histograms and saying why: the model pass that produced
the table is the expensive part, and losing it (or the report) over a plot would be worse.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from ..diagnose_page import page_head

NO_HISTOGRAMS = (
    "matplotlib is not installed, so this report has no histograms; "
    "pip install -e '.[eval]' (or pip install matplotlib) adds them"
)


def have_matplotlib() -> bool:
    """Whether the histograms can be drawn (matplotlib imports)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _histograms(table: Any) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    margin = table["logp_chosen"] - table["logp_rejected"]
    panels = [("ches", table["ches"]), ("ln_ches", table["ln_ches"]),
              ("log-prob margin pi_c - pi_r", margin)]  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    for ax, (name, values) in zip(axes, panels, strict=True):
        ax.hist(values, bins=40)
        ax.set_title(name)
    fig.tight_layout()
    src = _png(fig)
    plt.close(fig)
    return f'<img alt="histograms" src="data:image/png;base64,{src}">'


def _thumb(image: Any) -> str:
    from ..data.schema import to_pil_image, to_rgb

    pil = to_rgb(to_pil_image(image))
    pil.thumbnail((128, 128))
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def render_report(table: Any, rows: Any, summary: dict[str, Any], top: int = 12) -> str:
    from .collate import row_images

    esc = html.escape
    parts = page_head(summary)  # shared with the diffusion report (mmalign/diagnose_page.py)
    if len(table):
        if have_matplotlib():
            parts.append(_histograms(table))
        else:
            parts.append(f"<p><b>No histograms:</b> {esc(NO_HISTOGRAMS)}</p>")
        worst = table.sort_values("ln_ches", ascending=False).head(top)
        parts.append(f"<h2>The {len(worst)} highest-LN-CHES pairs (most likely to displace)</h2>")
        parts.append(
            "<table><tr><th>row</th><th>image</th><th>prompt</th><th>chosen</th>"
            "<th>rejected</th><th>LN-CHES</th><th>CHES</th><th>pi_c - pi_r</th></tr>"
        )
        for _, r in worst.iterrows():
            at = int(r["position"]) if "position" in r else int(r["row"])  # its index in rows
            images = "".join(_thumb(im) for im in row_images(rows[at]))
            margin = r["logp_chosen"] - r["logp_rejected"]
            parts.append(
                f"<tr><td>{int(r['row'])}</td><td>{images}</td><td>{esc(r['prompt'])}</td>"
                f"<td>{esc(r['chosen'])}</td><td>{esc(r['rejected'])}</td>"
                f"<td>{r['ln_ches']:.4g}</td><td>{r['ches']:.4g}</td><td>{margin:.3f}</td></tr>"
            )
        parts.append("</table>")
    return "\n".join(parts) + "\n"
