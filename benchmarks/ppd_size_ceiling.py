"""How far can personalising toy-sd go when size is the only taste it can render? (issue 22)

Not a speed benchmark: a ceiling for `mmalign eval winrate --user`. toy-sd draws no outline and
no tint its caption does not ask for (docs/results.md, "PPD on toy-sd"), so of the toy users'
taste axes (warmth, size, outline, and place since the family gained it) this asks what size
alone can move. This samples the held-out toy prompts without size words
(as the PPD evaluation does) three times with the same seeds: the bare caption, and the caption
with "small" and with "large". Each user's reward is read against the bare prompt; a user's
best fixed choice among the three is what a perfect size-only personalisation could give them.
Users whose best choice is the same get the same images, which caps specificity: besides the
specificity of those best choices, the script reports the most any assignment of the three
captions to the held-out users reaches (specificity compares mean rewards, as
`mmalign eval winrate --user` does).

    python benchmarks/ppd_size_ceiling.py --out runs/ppd-size-oracle [--n 200]

`--choices layouts` asks the same of every layout toy-sd can draw without losing fidelity (size
medium or large times the five places: `toy:users`' `model-layouts` candidates), now that the
users also taste place; the exhaustive search over assignments is skipped there (10^8 of them).
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import replace
from pathlib import Path

SIZES = ("medium", "small", "large")  # "medium": the bare caption, toy-sd's own sample
BARE = "medium"


def caption_choices(kind: str) -> dict[str, tuple[str, str]]:
    """name -> (size, position) of each caption variant; the bare caption is `BARE`."""
    from mmalign.toy.datasets.users import LAYOUTS

    if kind == "sizes":
        return {s: (s, "center") for s in SIZES}
    return {BARE: ("medium", "center")} | {
        f"{size}-{place}": (size, place)
        for size, place in LAYOUTS
        if (size, place) != (BARE, "center")
    }


def chosen_table(users: dict, held: list[str], choice: dict[str, str]) -> dict:
    """The user x conditioning matrix of mean rewards when user b is given caption choice[b]."""
    return {a: {b: users[a]["mean"][choice[b]] for b in held} for a in held}


def main(argv: list[str] | None = None) -> int:
    from mmalign.diffusion.load import load_pipeline
    from mmalign.eval.ppd_winrate import specificity, sync_images
    from mmalign.eval.winrate import generate_or_reuse, image_seed, win_stats
    from mmalign.ppd_cli import user_prompts
    from mmalign.rewards import get_scorer
    from mmalign.toy.rewards import HELDOUT_USERS, TRAIN_USERS, user_weights
    from mmalign.toy.world import parse_prompt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for the images and ceiling.json")
    ap.add_argument("--n", type=int, default=200, help="held-out prompts")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=2.5)
    ap.add_argument("--choices", default="sizes", choices=["sizes", "layouts"])
    args = ap.parse_args(argv)

    out = Path(args.out)
    sync_images(out, {"n": args.n, "steps": args.steps, "guidance": args.guidance})
    choices = caption_choices(args.choices)
    others = [c for c in choices if c != BARE]
    base = load_pipeline("toy:sd")
    prompts = user_prompts(f"toy:heldout:{args.n}")
    index = list(range(len(prompts)))
    seeds = [image_seed(0, i) for i in index]
    images = {}
    for name, (size, place) in choices.items():
        texts = [replace(parse_prompt(p), size=size, position=place).text for p in prompts]
        tag = f"size-{name}" if place == "center" else f"layout-{name}"
        images[name] = generate_or_reuse(base.pipe, tag, texts, seeds, index, out,
                                         steps=args.steps, guidance=args.guidance,
                                         batch_size=50)[0]  # fmt: skip
    users: dict[str, dict] = {}
    for user in HELDOUT_USERS + TRAIN_USERS:
        scorer = get_scorer(f"toy:user:{user}")
        reward = {s: scorer.score(images[s], prompts).cpu() for s in choices}
        wins = {s: win_stats(reward[BARE], reward[s], 0) for s in others}
        # the best fixed choice by win rate over the bare caption (a tie with itself is 50%)
        best = max(others, key=lambda s: wins[s]["win_rate"])
        if wins[best]["win_rate"] <= 0.5:
            best = BARE
        users[user] = {
            "weights": user_weights(user),
            "mean": {s: float(r.mean()) for s, r in reward.items()},
            "win_rate": {s: w["win_rate"] for s, w in wins.items()},
            "ci95": {s: w["ci95"] for s, w in wins.items()},
            "best": best,
            "best_win_rate": 0.5 if best == BARE else wins[best]["win_rate"],
        }
        print(f"{user} w={[round(w, 2) for w in user_weights(user)]} best {best:6s} "
              f"win {users[user]['best_win_rate']:.1%} ("
              + ", ".join(f"{s} {wins[s]['win_rate']:.1%}" for s in others[:4]) + ")")  # fmt: skip
    held = list(HELDOUT_USERS)
    spec = specificity(chosen_table(users, held, {u: users[u]["best"] for u in held}))
    hits, n_pairs = spec["hits"], spec["pairs"]
    best_any = None
    if args.choices == "sizes":
        best_any = max(
            specificity(chosen_table(users, held, dict(zip(held, pick, strict=True))))["hits"]
            for pick in itertools.product(SIZES, repeat=len(held))
        )
    result = {
        "prompts": len(prompts),
        "choices": args.choices,
        "users": users,
        "heldout_average_best_win_rate": sum(users[u]["best_win_rate"] for u in held) / len(held),
        "heldout_specificity": spec,
        "heldout_specificity_max_any_assignment": best_any,
    }
    (out / "ceiling.json").write_text(json.dumps(result, indent=2) + "\n")
    bound = "" if best_any is None else f"; at most {best_any}/{n_pairs} for any choice"
    print(f"held-out users, best fixed caption ({args.choices}): average win rate "
          f"{result['heldout_average_best_win_rate']:.1%}; specificity {hits}/{n_pairs} "
          f"({hits / n_pairs:.1%}){bound}; {out / 'ceiling.json'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
