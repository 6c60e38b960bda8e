"""`mmalign demo`: the main job on the toy world, end to end.

Train `configs/toy/mapo.yaml` (LoRA on toy-sd, building its data on first use), compare the
result with toy-sd on 200 held-out prompts (same seeds) and write a short report next to
the win-rate results and the side-by-side grid. Training takes the accelerator's device; the
win rate samples where `auto` resolves (`devices.resolve_device`: a GPU where torch sees
one, else the CPU, where it draws exactly the images it drew before), in float32.
"""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError, load_config

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "toy" / "mapo.yaml"


def _set_aside_other_recipe(run_dir: Path, cfg: object) -> None:
    """An earlier demo run of another recipe (an older checkout's config) is moved aside, with
    a note, so the demo trains the current recipe instead of resuming the old weights."""
    from .config import to_dict
    from .train.checkpoint import list_checkpoints
    from .train.loop import RUN_FILE
    from .train.resume import recipe_changes

    if not list_checkpoints(run_dir):
        return
    changes = recipe_changes(run_dir / RUN_FILE, to_dict(cfg))
    if not changes:
        return
    n = 1
    while (aside := run_dir.with_name(f"{run_dir.name}.old-{n}")).exists():
        n += 1
    run_dir.rename(aside)
    print(
        f"demo: {run_dir} was trained with another recipe ({'; '.join(changes[:3])}); "
        f"moved it to {aside} and training the current one from the start"
    )


def _with(overrides: tuple[str, ...]) -> str:
    """The report's note of the overrides the recipe ran with (none: nothing)."""
    return " with " + " ".join(f"`{o}`" for o in overrides) if overrides else ""


def run_demo(out: str | Path, config: str | Path = CONFIG, overrides: tuple[str, ...] = ()):
    from .data.prompts import resolve_prompts
    from .devices import resolve_device
    from .diffusion import load_pipeline, load_tuned
    from .diffusion.recipe import DiffusionRecipe
    from .eval.winrate import run_winrate
    from .train import Config
    from .train.loop import train

    if any(item.partition("=")[0] == "output_dir" for item in overrides):
        # the demo evaluates OUT/train: a run trained elsewhere would leave it evaluating
        # an earlier demo's weights, or none
        raise ConfigError("demo: output_dir is OUT/train, set by --out OUT; give --out instead")
    out = Path(out)
    run_dir = out / "train"
    cfg = load_config(Config, config, [f"output_dir={run_dir}", "train.resume_from=latest",
                                       *overrides])  # fmt: skip
    _set_aside_other_recipe(run_dir, cfg)
    result = train(cfg, DiffusionRecipe)
    device = resolve_device("auto")  # as training: a GPU where there is one
    base = load_pipeline(cfg.model.name_or_path, device=device)
    tuned = load_tuned(run_dir, device=device)
    results = run_winrate(
        base.pipe, tuned.pipe, resolve_prompts("toy:heldout"), ["toy:fidelity"], out / "eval",
        steps=20, guidance=2.5, meta={"base": base.source, "tuned": str(run_dir)},
    )  # fmt: skip
    r = results["scorers"]["toy:fidelity"]
    lo, hi = r["ci95"]
    lines = [
        "# mmalign demo: MaPO on toy-sd",
        "",
        f"Recipe: `{config}`{_with(overrides)} ({result.steps} steps, "
        f"{result.seconds:.0f} s of training).",
        f"Trained LoRA: `{run_dir}` (load it with `pipe.load_lora_weights(...)`).",
        "",
        f"On {r['n']} held-out prompts with the same seeds, the tuned model beats toy-sd on",
        f"`toy:fidelity` for **{r['win_rate']:.1%}** of prompts (95% bootstrap CI "
        f"{lo:.1%}-{hi:.1%}; {r['wins']} wins, {r['ties']} ties, {r['losses']} losses).",
        f"Mean fidelity {r['base_mean']:.3f} -> {r['tuned_mean']:.3f}; "
        f"median {r['base_median']:.3f} -> {r['tuned_median']:.3f}.",
        "",
        f"Side by side: `{results['grid']}`. Training metrics: `{run_dir / 'metrics.jsonl'}`.",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report, results
