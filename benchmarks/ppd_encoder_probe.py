"""Does a PPD user embedding carry the user's taste? A linear probe on toy-vlm (issue 22).

Not a speed benchmark. Synthetic toy users with random taste weights over size and place (the
tastes toy-sd can draw) each give 4 examples: a bare prompt and two clean renders at two
different layouts (as `toy:users`' `render-layouts`, without its jitter), the one their taste
prefers first. Each
user is embedded by `mmalign.vlm.user_embed.embed_users` for every (layer, pooling) asked; a
ridge regression (penalty chosen on the test users, so an upper bound for a linear read-out)
fitted on two thirds of the users predicts the weights of the rest, and the script prints the
correlation per axis. The `oracle` row reads the same 4 examples' exact taste axes (preferred
minus dispreferred, averaged): what 4 examples can tell at all.

    python benchmarks/ppd_encoder_probe.py [--users 192] [--out runs/ppd-encoder-probe.json]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

AXES = (1, 3, 4)  # size, horizontal, vertical in `TASTE_DIMS`


def ridge_correlations(x: torch.Tensor, w: torch.Tensor, n_train: int) -> list[float]:
    """Per-axis correlation of held-out predictions of a ridge fit (best penalty on a grid)."""
    xt, xs = x[:n_train].double(), x[n_train:].double()
    mu, sd = xt.mean(0), xt.std(0) + 1e-6
    zt, zs = (xt - mu) / sd, (xs - mu) / sd
    yt, ys = w[:n_train].double(), w[n_train:].double()
    best: list[float] | None = None
    for lam in torch.logspace(-2, 4, 13, dtype=torch.float64):
        eye = torch.eye(zt.shape[1], dtype=torch.float64)
        beta = torch.linalg.solve(zt.T @ zt + lam * eye, zt.T @ (yt - yt.mean(0)))
        pred = zs @ beta + yt.mean(0)
        cors = [float(torch.corrcoef(torch.stack([pred[:, i], ys[:, i]]))[0, 1]) for i in range(3)]
        if best is None or sum(cors) > sum(best):
            best = cors
    return best or []


def main(argv: list[str] | None = None) -> int:
    from torchvision.transforms.functional import to_pil_image

    from mmalign.toy.analysis import read_images
    from mmalign.toy.datasets.users import LAYOUTS
    from mmalign.toy.render import render_batch
    from mmalign.toy.rewards import taste_axes
    from mmalign.toy.world import SHAPES, ToyPrompt, sample_prompts
    from mmalign.vlm.load import load_vlm
    from mmalign.vlm.user_embed import embed_users

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=192)
    ap.add_argument("--model", default="toy:vlm")
    ap.add_argument(
        "--settings", default="-2:mean,-2:contrast,-2:contrast_tokens,0:contrast_tokens"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the table as JSON here")
    args = ap.parse_args(argv)

    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    weights = torch.randn(args.users, 3)
    weights = weights / weights.abs().sum(1, keepdim=True)
    examples, gaps = {}, []
    prompts = sample_prompts(4 * args.users, "train", args.seed)
    for u in range(args.users):
        rows, gap = [], torch.zeros(3)
        for k in range(4):
            p = prompts[4 * u + k]
            p = ToyPrompt(rng.choice(SHAPES), p.color, p.background)
            a, b = rng.sample(LAYOUTS, 2)
            images = render_batch([ToyPrompt(*p.combination, *a), ToyPrompt(*p.combination, *b)])
            axes = taste_axes(images, read_images(images))[:, list(AXES)]
            first = 0 if float(axes[0] @ weights[u]) >= float(axes[1] @ weights[u]) else 1
            rows.append((p.text, to_pil_image(images[first]), to_pil_image(images[1 - first])))
            gap += axes[first] - axes[1 - first]
        examples[f"u{u}"] = rows
        gaps.append(gap / 4)
    n_train = 2 * args.users // 3
    table = {"oracle": ridge_correlations(torch.stack(gaps), weights, n_train)}
    vlm = load_vlm(args.model)
    for setting in args.settings.split(","):
        layer, pooling = setting.split(":")
        embs = embed_users(vlm, examples, shots=4, layer=int(layer), pooling=pooling, batch_size=32)
        x = torch.stack([embs[f"u{u}"] for u in range(args.users)])
        table[setting] = ridge_correlations(x, weights, n_train)
    print(f"{args.users} users ({n_train} to fit), correlation of predicted and true weights:")
    for name, cors in table.items():
        print(
            f"  {name:22s} size {cors[0]:+.2f}  horizontal {cors[1]:+.2f}  vertical {cors[2]:+.2f}"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"users": args.users, "table": table}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
