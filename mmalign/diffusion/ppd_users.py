"""PPD at inference (Dang et al. CVPR 2025): a trained run, a user's embedding, user mixes.

A PPD run folder holds `ppd_adapter.safetensors` (the user branch, with the encoder settings it
was trained with) and the training users' `user_embeddings.safetensors`. A user not in that
file is embedded now: a toy family user from its first `shots` pairs of `toy:users` (its own
set, built and cached on first use) with the run's encoder, layer and pooling; so a held-out
user is "a new user from 4 examples", as in the paper. Mixing two users is linear
interpolation of their embeddings, `(1 - a) e_A + a e_B` (the paper's user interpolation).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import InputError
from ..suggest import did_you_mean
from . import ppd

HELDOUT_EXAMPLES = 8  # pairs per user built for embedding users outside the run (>= shots)


def run_embeddings(run: str | Path) -> dict[str, torch.Tensor]:
    """The training users' embeddings saved with a PPD run (empty if none)."""
    path = Path(run) / "user_embeddings.safetensors"
    if not path.is_file():
        return {}
    from safetensors.torch import load_file

    return dict(load_file(str(path)))


def user_set(spec: str) -> list[str]:
    """`heldout`, `train`, `named` (a toy user set) or ids separated by commas."""
    from ..toy.rewards import USER_SETS

    if spec.strip() in USER_SETS:
        return list(USER_SETS[spec.strip()])
    users = [u.strip() for u in spec.split(",") if u.strip()]
    if not users:
        raise InputError("--user: give a user id, ids separated by commas, or a set name")
    return users


def _toy_embeddings(
    users: Sequence[str],
    meta: dict[str, Any],
    base: str | None = None,
    device: str | torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Embeddings of toy users from their first `shots` pairs of their own `toy:users` set,
        built with the run's own `data.toy` options (the same kind of examples its training users
        were embedded from; toy-sd samples come from `base`), with the encoder settings the adapter
        was trained with (cached like the training ones). A run whose users were embedded with
    another encoder prompt format (`PROMPT_FORMAT_VERSION`) gets a warning. The encoder runs
    on `device` (None: the CPU) in the dtype the run's users were embedded in (`encoder_dtype`;
    float32 for a run that does not record it, as every run before it did)."""
    from datasets import load_from_disk

    from ..toy.cache import toy_pairs
    from ..toy.rewards import USER_SETS
    from ..vlm.load import VLMRef
    from ..vlm.user_embed import PROMPT_FORMAT_VERSION, cached_user_embeddings, examples_from_pairs

    trained = meta.get("prompt_format")
    if trained != PROMPT_FORMAT_VERSION:
        # the encoder's input changed since the run's users were embedded: a new user's
        # embedding may sit apart from theirs for that reason alone, so say so (not an error:
        # the run still works, and the user may want the comparison anyway)
        warnings.warn(
            f"PPD: the run's training users were embedded with encoder prompt format "
            f"{trained if trained is not None else 'unrecorded (before it was versioned)'}; "
            f"{', '.join(users)} are embedded with format {PROMPT_FORMAT_VERSION}. Retrain (or "
            "rerun `mmalign data user-embed` for ppd.embeddings) to compare like with like.",
            stacklevel=3,
        )
    shots = int(meta.get("shots", 4))
    options = dict(meta.get("examples_toy") or {})
    out: dict[str, torch.Tensor] = {}
    # the model loads only for a user set whose embeddings are not cached, once for them all
    encoder = VLMRef(
        str(meta.get("encoder", "toy:vlm")),
        dtype=str(meta.get("encoder_dtype") or "float32"),
        device=device,
    )
    for name, members in USER_SETS.items():
        wanted = [u for u in users if u in members]
        if not wanted:
            continue
        n = len(members) * max(HELDOUT_EXAMPLES, shots)
        opts = {**options, "n": n, "users": name}
        rows = load_from_disk(str(toy_pairs("users", opts, base)))
        examples, _ = examples_from_pairs(rows)
        embs, _ = cached_user_embeddings(
            encoder, {u: examples.get(u, []) for u in wanted}, shots=shots,  # none: a clear error
            layer=int(meta.get("layer", -2)), pooling=str(meta.get("pooling", "mean")),
        )  # fmt: skip
        out.update(embs)
    return out


def _suggest_user(name: str, saved: Sequence[str]) -> str:
    """Did-you-mean for an unknown `--user`: the closest id or user set name (`heldot` ->
    `heldout`, as `user_set` takes both; `H03` -> `h03`)."""
    from ..toy.rewards import ALL_USERS, USER_SETS

    return did_you_mean(name, {*saved, *ALL_USERS, *USER_SETS})


def user_embeddings(
    run: str | Path,
    users: Sequence[str],
    base: str | None = None,
    *,
    device: str | torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """One embedding per id: the run's own, else a toy user's from its few-shot examples
    (sampled from `base` where they are model samples; default: the run's base model; the
    encoder on `device`); an unknown id is an error naming the closest known ones. The
    embeddings are float32 on the CPU."""
    from ..toy.rewards import ALL_USERS

    saved = run_embeddings(run)
    unknown = [u for u in users if u not in saved and u not in ALL_USERS]
    if unknown:
        raise InputError(
            f"unknown user '{unknown[0]}': not in {run}/user_embeddings.safetensors and not a "
            f"toy user; {_suggest_user(unknown[0], saved)}"
        )
    out = {u: saved[u] for u in users if u in saved}
    rest = [u for u in users if u not in out]
    if rest:
        from .recipe import run_info

        base = base or (run_info(run) or {}).get("base")
        meta = ppd.adapter_meta(run)
        new = _toy_embeddings(rest, meta, base, device)
        width = next(iter(saved.values())).shape[-1] if saved else None
        made = next(iter(new.values())).shape[-1]
        if width is not None and made != width:  # the run's users came from elsewhere
            raise InputError(
                f"{', '.join(rest)}: not in {run}/user_embeddings.safetensors, and the encoder "
                f"the run records ({meta.get('encoder', 'toy:vlm')}) embeds them {made} wide "
                f"where the run's users are {width}: the run was trained on embeddings made "
                "otherwise (ppd.embeddings); add these users to that file and retrain, or give "
                "one's embedding with --user-embedding FILE"
            )
        out.update(new)
    return {u: out[u].float() for u in users}


def embedding_file(path: str | Path, user: str | None = None) -> torch.Tensor:
    """The one embedding in a `user_embeddings.safetensors` (or `user` among several)."""
    from ..vlm.user_embed import load_embeddings

    embs = load_embeddings(path)
    if user is not None:
        if user not in embs:
            raise InputError(f"{path} has no user '{user}'; {did_you_mean(user, sorted(embs))}")
        return embs[user].float()
    if len(embs) != 1:
        raise InputError(
            f"{path} holds {len(embs)} users ({', '.join(sorted(embs)[:6])}, ...); "
            "name one with --user"
        )
    return next(iter(embs.values())).float()


def parse_mix(spec: str) -> tuple[str, float]:
    """`ID:WEIGHT` (weight in [0, 1]) -> (id, weight)."""
    user, sep, weight = spec.rpartition(":")
    try:
        a = float(weight)
    except ValueError:
        a = -1.0
    if not sep or not user or not 0.0 <= a <= 1.0:
        raise InputError(f"--mix {spec!r}: expected ID:WEIGHT with WEIGHT in [0, 1], e.g. h03:0.5")
    return user, a


def mix(e_a: torch.Tensor, e_b: torch.Tensor, a: float) -> torch.Tensor:
    """PPD's user interpolation: `(1 - a) e_A + a e_B`."""
    return (1.0 - a) * e_a + a * e_b


def load_ppd(
    run: str | Path,
    base: str | None = None,
    scale: float = 1.0,
    *,
    device: str | torch.device | None = None,
    dtype: str = "float32",
    key: str = "model",
) -> tuple[Any, dict[str, Any]]:
    """The run's base pipeline with its user branch loaded at weight `scale` (1 as trained):
    (DiffusionModel, adapter meta). The pipeline loads in `dtype`; once the branch is in, the
    whole of it moves to `device` (None: it stays on the CPU). `key`: where the user names the
    base (a command's MODEL, or `--base`), for messages."""
    from .load import load_pipeline
    from .recipe import run_info

    info = run_info(run) or {}
    source = base or info.get("base")
    if source is None:
        raise InputError(f"{run} is not a PPD training output_dir (no mmalign_run.json)")
    model = load_pipeline(source, dtype=dtype, key=key)
    meta = ppd.load_adapter(model.pipe.unet, run)
    if scale != 1.0:
        ppd.set_user_scale(model.pipe.unet, scale)
    if device is not None:
        model.pipe.to(device)
    return model, meta


class UserPipeline:
    """A pipeline that conditions every image on one user embedding: `pipe(prompts, **kw)`
    with `ip_adapter_image_embeds` [zeros; e] when the pipeline runs classifier-free guidance
    (the zero user is its negative, as user drop trained it), else e alone: the stock pipeline's
    own decision (`ppd.pipeline_guides`), so a base with embedded or distilled guidance (LCM,
    `time_cond_proj_dim`) gets no [zeros; e] it would read as extra user tokens."""

    def __init__(self, pipe: Any, embedding: torch.Tensor):
        self.pipe = pipe
        self.unet = pipe.unet
        self.embedding = ppd.check_embedding(pipe.unet, embedding)[0]

    def __call__(self, prompts: Sequence[str], **kwargs: Any) -> Any:
        embeds = ppd.pipeline_embeds(self.pipe, self.embedding, kwargs.get("guidance_scale"))
        return self.pipe(list(prompts), ip_adapter_image_embeds=embeds, **kwargs)
