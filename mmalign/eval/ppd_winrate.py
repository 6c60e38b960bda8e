"""PPD's per-user evaluation (Dang et al. CVPR 2025): `mmalign eval winrate --tuned RUN --user`.

For every user A: the base model's image and the PPD model's image conditioned on A, same
prompt and seed, are scored with A's own reward (`toy:user:A`); the win rate and its 95%
bootstrap CI over prompts are A's row of the per-user table. With `matrix` on, the PPD model
is also conditioned on every other user B and scored with A's reward: `matrix[A][B]` is A's
mean reward under conditioning B, and specificity is the share of ordered pairs (A, B), A != B
with different tastes, where `matrix[A][A] > matrix[A][B]`. `interpolate=(A, B)` sweeps the mix
`(1 - a) e_A + a e_B` over `MIX_WEIGHTS` and reports both users' mean rewards along it with
their Spearman correlation against a (B's should rise, A's fall). For toy family users,
`taste_response` reads the samples themselves: the mean of each taste axis (warmth, size,
outline, horizontal, vertical; `mmalign.toy.rewards.taste_axes`) under each user's
conditioning and the base's, and per axis the Spearman correlation over users between their
weight and that mean: whether the branch moves a user's samples the way that user's taste
points, whatever it does to fidelity.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..devices import CPU_FLOAT32, sampling_precision
from ..diffusion import ppd
from ..diffusion.ppd_users import UserPipeline, mix
from ..rewards import get_scorer
from .saved_images import fingerprint, generate_or_reuse, image_seed
from .winrate import win_stats

MIX_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
SAME_TASTE = 1e-6  # taste weights closer than this (L1) count as the same taste


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when either is constant."""

    def ranks(v: Sequence[float]) -> torch.Tensor:
        t = torch.tensor(list(v), dtype=torch.float64)
        order = t.argsort()
        r = torch.empty_like(t)
        r[order] = torch.arange(len(t), dtype=torch.float64)
        for value in t.unique():  # ties share their average rank
            same = t == value
            r[same] = r[same].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = (rx.norm() * ry.norm()).item()
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def shown_rho(value: float, sign: bool = True) -> str:
    """A Spearman correlation as printed; an undefined one (nan: the samples, or the weights,
    did not vary) is said so, not printed as `nan`."""
    if math.isnan(value):
        return "undefined (constant)"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def json_safe(value: Any) -> Any:
    """`value` with every nan float as None: results.json stays valid JSON (`NaN` is not)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def tastes_differ(a: str, b: str) -> bool:
    """Whether users a and b count as different tastes for specificity (family users: L1
    distance of their weights above SAME_TASTE; named users: different ids)."""
    from ..toy.rewards import FAMILY_USERS, user_weights

    if a in FAMILY_USERS and b in FAMILY_USERS:
        wa, wb = user_weights(a), user_weights(b)
        return sum(abs(x - y) for x, y in zip(wa, wb, strict=True)) > SAME_TASTE
    return a != b


def taste_response(
    base: torch.Tensor, cond_images: Mapping[str, torch.Tensor]
) -> dict[str, Any] | None:
    """Mean taste axes of the base's and each family user's conditioned samples, and per axis
    the Spearman correlation over users of weight vs mean (None: not all family users, or
    fewer than 3)."""
    from ..toy.analysis import read_images
    from ..toy.rewards import FAMILY_USERS, TASTE_DIMS, taste_axes, user_weights

    users = list(cond_images)
    if len(users) < 3 or not set(users) <= set(FAMILY_USERS):
        return None

    def mean_axes(images: torch.Tensor) -> list[float]:
        images = images.float().clamp(0, 1)
        return taste_axes(images, read_images(images)).mean(0).tolist()

    means = {u: mean_axes(cond_images[u]) for u in users}
    return {
        "axes": list(TASTE_DIMS),
        "base": mean_axes(base),
        "users": means,
        "spearman": {
            axis: spearman([user_weights(u)[k] for u in users], [means[u][k] for u in users])
            for k, axis in enumerate(TASTE_DIMS)
        },
    }


def specificity(table: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Share of ordered pairs (A, B), A != B with different tastes, where `table[A][A] >
    table[A][B]` (A's mean reward under its own conditioning beats it under B's).

    `mutual`: unordered pairs where both A and B do better under their own conditioning. A
    conditioning that only shifts quality alike for everyone (B's images better for all users)
    makes exactly one of each pair a hit: 50% specificity and `mutual` 0 (mmalign's reading,
    not the paper's)."""
    users = list(table)
    pairs = [(a, b) for a in users for b in users if a != b and tastes_differ(a, b)]
    hit = {(a, b): table[a][a] > table[a][b] for a, b in pairs}
    mutual = sum(hit[a, b] and hit[b, a] for a, b in pairs if a < b)
    return {
        "share": sum(hit.values()) / len(hit) if hit else float("nan"),
        "pairs": len(hit),
        "hits": sum(hit.values()),
        "mutual": mutual,
        "unordered_pairs": len(pairs) // 2,
    }


def sync_images(out_dir: Path, settings: dict[str, Any]) -> None:
    """Reuse saved images only when model and sampler are unchanged; else start over."""
    import shutil

    path = out_dir / "images" / "settings.json"
    if path.is_file() and json.loads(path.read_text()) != settings:
        print(f"mmalign: {out_dir / 'images'} was generated with other settings; generating again")
        shutil.rmtree(out_dir / "images")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def precision_settings(base_pipe: Any, ppd_pipe: Any) -> dict[str, Any]:
    """Each model's device type and dtype (`sampling_precision`) where not CPU float32: absent
    there, so images saved before they were recorded (all CPU float32) stay valid, while one
    seed's images drawn on a GPU or in bfloat16 are not taken for them."""
    found = {"base": sampling_precision(base_pipe), "tuned": sampling_precision(ppd_pipe)}
    return {f"{tag}_precision": p for tag, p in found.items() if p != CPU_FLOAT32}


def embedding_digest(embedding: torch.Tensor) -> str:
    """Identity of a user embedding's values (the saved images' key): a digest of its bytes, so
    any changed value draws the images again (a sum missed changes that cancel)."""
    data = embedding.detach().to("cpu", torch.float64).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def run_user_winrate(
    base_pipe: Any,
    ppd_pipe: Any,
    prompts: Sequence[str],
    embeddings: Mapping[str, torch.Tensor],
    out_dir: str | Path,
    *,
    seed: int = 0,
    steps: int = 20,
    guidance: float = 2.5,
    batch_size: int = 50,
    matrix: bool = True,
    interpolate: tuple[str, str] | None = None,
    meta: dict[str, Any] | None = None,
    users: Sequence[str] | None = None,
    resolution: int | None = None,
) -> dict[str, Any]:
    """Per-user win rates of the PPD model over its base; the user x conditioning matrix and
    specificity (`matrix`); the interpolation sweep (`interpolate`). Writes results.json and
    report.html under out_dir; generated images are saved and reused. `users`: the users the
    table, average and matrix are over (default: every one in `embeddings`); an
    interpolation end outside them is embedded for the sweep only, so naming one does not
    change the average. `resolution`: the image side (None: the pipelines' default)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    users = list(embeddings) if users is None else list(users)
    missing = [u for u in users if u not in embeddings]
    if missing:
        raise ValueError(f"users {missing} have no embedding")
    scorers = {u: get_scorer(f"toy:user:{u}") for u in embeddings}  # an unknown user fails here
    tuned = (meta or {}).get("tuned")
    fixed = {u: embedding_digest(e) for u, e in embeddings.items()}  # which embeddings drew
    base_id = (meta or {}).get("base")  # its weights too: a base retrained in place draws anew
    settings = {"base": base_id, "base_weights": fingerprint(base_id), "tuned": tuned,
                "tuned_weights": fingerprint(tuned), "steps": steps, "guidance": guidance,
                "embeddings": fixed}  # fmt: skip
    scale = ppd.user_scale(ppd_pipe.unet)  # the branch's weight (--user-scale) shapes the images
    if scale != 1.0:  # absent at 1, so images saved before the setting existed stay valid
        settings["user_scale"] = scale
    if resolution is not None:  # absent at the default, for the same reason
        settings["resolution"] = resolution
    settings.update(precision_settings(base_pipe, ppd_pipe))  # absent at CPU float32
    sync_images(out_dir, settings)
    texts, index = list(prompts), list(range(len(prompts)))
    seeds = [image_seed(seed, i) for i in index]
    sampler = {"steps": steps, "guidance": guidance, "batch_size": batch_size,
               "resolution": resolution}  # fmt: skip

    def images(tag: str, pipe: Any) -> torch.Tensor:
        return generate_or_reuse(pipe, tag, texts, seeds, index, out_dir, **sampler)[0]

    base = images("base", base_pipe)
    cond_images = {b: images(f"user-{b}", UserPipeline(ppd_pipe, embeddings[b])) for b in users}
    per_user: dict[str, Any] = {}
    table: dict[str, dict[str, float]] = {}
    for a in users:
        r_base = scorers[a].score(base, texts).cpu()
        r_own = scorers[a].score(cond_images[a], texts).cpu()
        per_user[a] = win_stats(r_base, r_own, seed)
        if matrix:
            table[a] = {b: float(scorers[a].score(cond_images[b], texts).mean()) for b in users}
    results: dict[str, Any] = {
        "users": per_user,
        "average_win_rate": sum(r["win_rate"] for r in per_user.values()) / len(per_user),
    }
    if matrix:
        results["matrix"] = table
        results["specificity"] = specificity(table)
    response = taste_response(base, cond_images)
    if response is not None:
        results["taste_response"] = response
    if interpolate is not None:
        results["interpolation"] = _interpolate(
            interpolate, embeddings, ppd_pipe, scorers, texts, images
        )
    results.update({
        "prompts": len(texts), "seed": seed, "steps": steps, "guidance": guidance,
        "user_scale": scale, "seconds": time.perf_counter() - started, **(meta or {}),
    })  # fmt: skip
    # an undefined correlation (constant samples) is null, not NaN, which JSON lacks
    (out_dir / "results.json").write_text(json.dumps(json_safe(results), indent=2) + "\n")
    results["report"] = str(write_user_report(out_dir, results))
    return results


def _interpolate(pair, embeddings, ppd_pipe, scorers, texts, images) -> dict[str, Any]:
    a, b = pair
    for u in pair:
        if u not in embeddings:
            raise ValueError(f"--interpolate: user '{u}' is not among the evaluated --user ids")
    mean_a, mean_b = [], []
    for w in MIX_WEIGHTS:
        e = mix(embeddings[a], embeddings[b], w)
        # the ends are exactly e_A and e_B (1 * e + 0 * e'): their images are already made
        tag = {0.0: f"user-{a}", 1.0: f"user-{b}"}.get(w, f"mix-{a}-{b}-{w:g}")
        ims = images(tag, UserPipeline(ppd_pipe, e))
        mean_a.append(float(scorers[a].score(ims, texts).mean()))
        mean_b.append(float(scorers[b].score(ims, texts).mean()))
    return {
        "a": a, "b": b, "weights": list(MIX_WEIGHTS),
        f"mean_{a}": mean_a, f"mean_{b}": mean_b, "mean_a": mean_a, "mean_b": mean_b,
        "spearman_b_up": spearman(MIX_WEIGHTS, mean_b),
        "spearman_a_down": -spearman(MIX_WEIGHTS, mean_a),
    }  # fmt: skip


def write_user_report(out_dir: str | Path, results: Mapping[str, Any]) -> Path:
    """`report.html`: the per-user win-rate table, the user x conditioning matrix, the taste
    response and the interpolation sweep, from `results`."""
    from .report import CSS

    e = html.escape
    parts = [f"<!doctype html><meta charset=utf-8><title>PPD per-user win rates</title>"
             f"<style>{CSS}</style><h1>PPD: per-user win rates</h1>"
             f"<p class=meta>tuned {e(str(results.get('tuned')))} vs base "
             f"{e(str(results.get('base')))}; {results['prompts']} prompts, seed "
             f"{results['seed']}, {results['steps']} steps, guidance {results['guidance']}, "
             f"user scale {results.get('user_scale', 1.0):g}</p>",
             "<h2>Per user (own reward, conditioned on that user)</h2><table><tr>"
             "<th class=l>user</th><th>win rate</th><th>95% CI</th><th>base mean</th>"
             "<th>PPD mean</th><th>n</th></tr>"]  # fmt: skip
    for u, r in results["users"].items():
        lo, hi = r["ci95"]
        parts.append(
            f"<tr><td class=l>{e(u)}</td><td>{r['win_rate']:.1%}</td><td>{lo:.1%}-{hi:.1%}</td>"
            f"<td>{r['base_mean']:.4f}</td><td>{r['tuned_mean']:.4f}</td><td>{r['n']}</td></tr>"
        )
    parts.append(f"</table><p>average win rate {results['average_win_rate']:.1%}</p>")
    table = results.get("matrix")
    if table:
        users = list(table)
        spec = results["specificity"]
        parts.append(
            "<h2>User x conditioning (mean reward of the row user)</h2><table><tr>"
            "<th class=l>reward \\ conditioned on</th>"
            + "".join(f"<th>{e(b)}</th>" for b in users)
            + "</tr>"
        )
        for a in users:
            best = max(table[a].values())
            cells = "".join(
                f"<td class={'up' if table[a][b] == best else ''}>{table[a][b]:.4f}</td>"
                for b in users
            )
            parts.append(f"<tr><td class=l>{e(a)}</td>{cells}</tr>")
        parts.append(
            f"</table><p>specificity: {spec['hits']} of {spec['pairs']} ordered pairs "
            f"({spec['share']:.1%}) score higher on their own conditioning; in "
            f"{spec['mutual']} of {spec['unordered_pairs']} pairs both users do</p>"
        )
    response = results.get("taste_response")
    if response:
        axes = response["axes"]
        parts.append("<h2>Taste response (mean taste axis of the samples)</h2><table><tr>"
                     "<th class=l>conditioned on</th>"
                     + "".join(f"<th>{e(x)}</th>" for x in axes) + "</tr>")  # fmt: skip
        rows = [("base (no user)", response["base"]), *response["users"].items()]
        for who, means in rows:
            cells = "".join(f"<td>{v:+.3f}</td>" for v in means)
            parts.append(f"<tr><td class=l>{e(who)}</td>{cells}</tr>")
        rho = ", ".join(f"{e(x)} {shown_rho(response['spearman'][x])}" for x in axes)
        parts.append(f"</table><p>Spearman over users, weight vs mean: {rho}</p>")
    sweep = results.get("interpolation")
    if sweep:
        a, b = sweep["a"], sweep["b"]
        parts.append(f"<h2>Interpolation {e(a)} -> {e(b)}</h2><table><tr><th>a</th>"
                     f"<th>mean {e(a)}</th><th>mean {e(b)}</th></tr>")  # fmt: skip
        for w, ra, rb in zip(sweep["weights"], sweep["mean_a"], sweep["mean_b"], strict=True):
            parts.append(f"<tr><td>{w:g}</td><td>{ra:.4f}</td><td>{rb:.4f}</td></tr>")
        parts.append(
            f"</table><p>Spearman: {e(b)} up {shown_rho(sweep['spearman_b_up'], False)}, "
            f"{e(a)} down {shown_rho(sweep['spearman_a_down'], False)}</p>"
        )
    path = Path(out_dir) / "report.html"
    path.write_text("".join(parts) + "\n")
    return path
