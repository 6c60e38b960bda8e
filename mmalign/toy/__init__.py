"""The toy "shapes" world: prompts, a renderer and exact programmatic rewards.

    from mmalign.toy import render, fidelity
    image = render("a small red circle on the left on a blue background")  # [3,32,32]
    fidelity(image[None], ["a small red circle on the left on a blue background"])  # ~1.0

Only torch is imported here; the toy models (`sd`, `vlm`) and data sets load on demand.
"""

from .flaws import dense_scores, flaw_heatmap, inject_flaws
from .render import STYLES, render, render_batch
from .rewards import (
    ALL_USERS,
    HELDOUT_USERS,
    TRAIN_USERS,
    USER_SETS,
    USERS,
    fidelity,
    fidelity_parts,
    style_score,
    user_reward,
    user_taste,
    user_weights,
)
from .world import (
    COLORS,
    PALETTE,
    POSITIONS,
    SHAPES,
    SIZES,
    ToyPrompt,
    all_prompts,
    parse_prompt,
    prompts,
    sample_prompts,
)

__all__ = [
    "ALL_USERS",
    "COLORS",
    "HELDOUT_USERS",
    "PALETTE",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "STYLES",
    "TRAIN_USERS",
    "USERS",
    "USER_SETS",
    "ToyPrompt",
    "all_prompts",
    "dense_scores",
    "fidelity",
    "fidelity_parts",
    "flaw_heatmap",
    "inject_flaws",
    "parse_prompt",
    "prompts",
    "render",
    "render_batch",
    "sample_prompts",
    "style_score",
    "user_reward",
    "user_taste",
    "user_weights",
]
