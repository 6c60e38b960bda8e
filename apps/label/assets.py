"""What the labeling page loads once: the keyboard shortcuts (a script in the page head) and
the style sheets of the labeling and admin tabs."""

from __future__ import annotations

KEYS_JS = """
<script>
(() => {
  const keys = {ArrowLeft: "lbl-left", ArrowRight: "lbl-right", ArrowDown: "lbl-tie",
                ArrowUp: "lbl-bad", b: "lbl-bad", B: "lbl-bad",
                s: "lbl-skip", S: "lbl-skip", u: "lbl-undo", U: "lbl-undo"};
  document.addEventListener("keydown", (event) => {
    const tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || event.target.isContentEditable) return;
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const id = keys[event.key];
    if (!id) return;
    const button = document.getElementById(id);
    if (button && !button.disabled) { event.preventDefault(); button.click(); }
  });
})();
</script>
"""

CSS = """
.gradio-container { max-width: 1400px !important; margin: auto; }
#lbl-header { display: flex; align-items: center; gap: 18px; }
#lbl-prompt { font-size: 1.55rem; line-height: 1.35; font-weight: 600; text-align: center;
  padding: 14px 18px; border-radius: 12px; background: var(--block-background-fill);
  border: 1px solid var(--border-color-primary); }
#lbl-prompt .lbl-muted { font-size: 0.95rem; font-weight: 400; opacity: 0.65; display: block; }
.lbl-progress { width: 100%; }
.lbl-progress .lbl-bar { height: 12px; border-radius: 6px; background: var(--neutral-200);
  overflow: hidden; }
.lbl-progress .lbl-fill { height: 100%; background: linear-gradient(90deg, #6366f1, #22c55e);
  transition: width 0.25s ease; }
.lbl-progress .lbl-text { font-size: 0.9rem; margin-top: 4px; opacity: 0.8; }
.lbl-img img { object-fit: contain !important; image-rendering: pixelated; }
.lbl-vote button { font-size: 1.1rem !important; min-height: 56px; }
kbd { border: 1px solid #9ca3af; border-bottom-width: 2px; border-radius: 4px;
  padding: 0 6px; font-family: ui-monospace, monospace; font-size: 0.85em;
  background: rgba(127,127,127,0.12); }
#lbl-status { min-height: 1.6em; text-align: center; }
.lbl-resp { white-space: pre-wrap; font-size: 1.05rem; line-height: 1.45; padding: 12px 16px;
  border-radius: 12px; border: 1px solid var(--border-color-primary);
  background: var(--block-background-fill); min-height: 120px; }
.lbl-top img { object-fit: contain !important; }
"""

ADMIN_CSS = """
.lbl-cards { display: grid; grid-template-columns: repeat(5, 1fr); gap: 12px; margin: 6px 0 4px; }
.lbl-cards div { border: 1px solid var(--border-color-primary); border-radius: 12px;
  padding: 12px 14px; background: var(--block-background-fill); }
.lbl-cards b { display: block; font-size: 1.6rem; }
.lbl-cards span { font-size: 0.85rem; opacity: 0.75; }
"""
