"""An `output_dir` that already holds a run, judged before anything loads (`check_sources`).

The loop refuses to train over another run's checkpoints and to resume a checkpoint under
another recipe, but only after the model has loaded and the data been built and checked,
and it suggested `train.resume_from=latest` whatever recipe the run had been made with (a
resume the loop then refused). Here both are said first, as input errors (exit 2), and
resuming is suggested only where the saved recipe matches this one (`resume.recipe_changes`).
"""

from __future__ import annotations

from pathlib import Path

from ..config import to_dict
from .checkpoint import list_checkpoints
from .config import Config
from .resume import RESUMABLE, recipe_changes

RUN_FILE = "mmalign_run.json"  # (loop.RUN_FILE: the loop imports this module's callers)
SHOWN = 6  # differences named in a message, the rest as "..."


def _listed(changes: list[str]) -> str:
    return "; ".join(changes[:SHOWN]) + ("; ..." if len(changes) > SHOWN else "")


def existing_run_problem(cfg: Config) -> str | None:
    """Why `cfg` cannot train into its `output_dir` as it stands, or None: it holds an earlier
    run's checkpoints and no `train.resume_from` is set (resume it where the recipes match,
    else choose another output_dir), or the checkpoint to resume was made by another recipe."""
    out = Path(cfg.output_dir).expanduser()
    resume_from = cfg.train.resume_from
    found = list_checkpoints(out)
    if resume_from is None:
        if not found:
            return None
        changes = recipe_changes(out / RUN_FILE, to_dict(cfg))
        if not changes:
            return (
                f"output_dir: {cfg.output_dir} already holds checkpoints of this recipe (up to "
                f"{found[-1].name}); set train.resume_from=latest to continue that run, or "
                "choose another output_dir"
            )
        return (
            f"output_dir: {cfg.output_dir} already holds the checkpoints of another recipe "
            f"({_listed(changes)}); choose another output_dir (or delete {cfg.output_dir} to "
            "start over there)"
        )
    if resume_from == "latest":
        if not found:  # (a checkpoint set aside mid-rotation is the loop's to recover)
            return None
        checkpoint = found[-1]
    else:
        checkpoint = Path(resume_from).expanduser()
    changes = recipe_changes(checkpoint.parent.parent / RUN_FILE, to_dict(cfg))
    if not changes:
        return None
    return (
        f"train.resume_from: {checkpoint} was trained with another recipe ({_listed(changes)}): "
        f"a resumed run may change only {', '.join(RESUMABLE)}. Choose another output_dir for "
        "the new recipe"
    )
