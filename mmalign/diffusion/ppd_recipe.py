"""PPD training (Dang et al. CVPR 2025): Diffusion-DPO on per-user pairs, conditioned on users.

`mmalign train` runs this recipe when a diffusion recipe has a `ppd:` section. It is the
diffusion recipe with three changes (METHODS.md section 2, "PPD"):

1. Each user of the data gets one embedding from the VLM encoder reading the user's first
   `ppd.shots` pairs (`mmalign/vlm/user_embed.py`; cached by the encoder's weights, the
   examples and the prompt format's version, or read from `ppd.embeddings`, the output of
   `mmalign data user-embed`).
2. What trains is the IP-Adapter user branch (`ppd.add_user_branch`), nothing else.
3. Scores are Diffusion-DPO's `-mse` (the paper's loss; any core loss takes them) with the
   policy conditioned on the pair's user embedding, zeroed with probability `ppd.user_drop`,
   and the reference the same UNet with the user branch off, i.e. exactly the base model.

The run saves `ppd_adapter.safetensors` (IP-Adapter layout, stock `load_ip_adapter` reads it)
and the training users' `user_embeddings.safetensors` beside it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from . import ppd
from .recipe import DiffusionRecipe
from .scorer import DiffusionPairScorer

DROP_SALT = 0x5DEECE66D  # the user-drop draw of a pair: its own stream beside t, noise, caption


class PPDPairScorer(DiffusionPairScorer):
    """`DiffusionPairScorer` with the pair's user embedding in the policy's `added_cond_kwargs`
    and the reference the same UNet with the user branch off (`ppd.user_branch_off`)."""

    user_drop: float = 0.0
    _user: torch.Tensor | None = None

    def user_keep(self, seeds: torch.Tensor) -> torch.Tensor:
        """1 where pair i keeps its user, 0 where it is dropped; from the pair's own seed."""
        gen = torch.Generator()
        keep = []
        for seed in seeds.tolist():
            gen.manual_seed((int(seed) + DROP_SALT) % (2**62))
            keep.append(bool(torch.rand(1, generator=gen) >= self.user_drop))
        return torch.tensor(keep, dtype=torch.float32)

    def __call__(self, unet, batch, seeds, *, with_reference, base=None):
        user = batch["user_embeds"]
        self._user = user * self.user_keep(seeds).to(user)[:, None]
        try:
            return super().__call__(unet, batch, seeds, with_reference=with_reference, base=base)
        finally:
            self._user = None

    def _added_cond(self, cond, time_ids) -> dict[str, Any]:
        out = super()._added_cond(cond, time_ids)
        if self._user is None:
            raise ValueError("PPD scores need the batch's user embeddings (user_embeds)")
        out["image_embeds"] = [self._user.repeat(2, 1)[:, None, :]]
        return out

    @contextlib.contextmanager
    def _reference(self, unet) -> Iterator[torch.nn.Module]:
        with ppd.user_branch_off(unet):
            yield unet


def training_embeddings(
    cfg: Any, rows: Any, *, device: str | torch.device | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One embedding per user of `rows`: read from `ppd.embeddings`, or computed (and cached)
    by the encoder from each user's first `ppd.shots` pairs. Returns (embeddings, info).
    The encoder runs in `ppd.encoder_dtype` (float32 unless asked; not `model.dtype`) on
    `device`, the training accelerator's (None: the CPU), or on the CPU with
    `ppd.encoder_device: cpu`. `encoder_dtype` is recorded, so a new user is embedded the same
    way. The cache entry is computed under its own lock (`cached_user_embeddings`): of the
    processes of one launch (and of runs side by side) one computes, the others read it. The
    encoder is named by a `VLMRef` (the key needs its files and processor, not its weights in
    memory): only the process that computes the entry loads it; on a hit none does."""
    from ..vlm.user_embed import (
        PROMPT_FORMAT_VERSION,
        cached_user_embeddings,
        examples_from_pairs,
        load_embeddings,
    )

    p = cfg.ppd
    dtype = str(getattr(p, "encoder_dtype", "float32"))
    # `prompt_format`: the encoder input's version (see user_embed.PROMPT_FORMAT_VERSION); None
    # for given embeddings that do not record it (written before it was versioned)
    info: dict[str, Any] = {"encoder": p.encoder, "shots": p.shots, "layer": p.layer,
                            "pooling": p.pooling, "prompt_format": None,
                            "encoder_dtype": dtype}  # fmt: skip
    if p.embeddings is not None:
        embs = load_embeddings(p.embeddings)
        meta_file = Path(p.embeddings)
        meta_file = (meta_file if meta_file.is_dir() else meta_file.parent) / "user_embeddings.json"
        if meta_file.is_file():
            import json

            saved = json.loads(meta_file.read_text())
            keys = ("shots", "layer", "pooling", "prompt_format")
            info.update({k: saved[k] for k in keys if k in saved})
            info["encoder"] = saved.get("model", p.encoder)
            # `data user-embed --dtype` records `dtype`, a PPD run's own file `encoder_dtype`;
            # a file with neither was written when every encoder ran in float32
            made = str(saved.get("encoder_dtype") or saved.get("dtype") or "float32")
            info["encoder_dtype"] = made  # new users at inference: as these were embedded
            if made != dtype:
                warnings.warn(
                    f"ppd.embeddings: {p.embeddings} were embedded in {made} ({meta_file}), "
                    f"ppd.encoder_dtype is {dtype}: used as given; a new user is embedded in "
                    f"{made}, as they were. Rerun `mmalign data user-embed --dtype {dtype}` "
                    f"or set ppd.encoder_dtype: {made} to make them agree.",
                    stacklevel=2,
                )
        return embs, {**info, "source": str(p.embeddings), "cached": True}
    from ..vlm.load import VLMRef

    examples, ties = examples_from_pairs(rows)
    if getattr(p, "encoder_device", "auto") == "cpu":
        device = torch.device("cpu")  # off the accelerator, where the diffusion model is
    # its weights and dtype are part of the cache key; loaded on a miss, by the computing process
    encoder = VLMRef(p.encoder, key="ppd.encoder", dtype=dtype, device=device)
    embs, hit = cached_user_embeddings(
        encoder, examples, shots=p.shots, layer=p.layer, pooling=p.pooling,
        batch_size=p.batch_size,
    )  # fmt: skip
    del encoder  # and the model it loaded, if it did
    if not hit and torch.cuda.is_available():
        torch.cuda.empty_cache()  # the encoder's memory back before the diffusion model trains
    info["prompt_format"] = PROMPT_FORMAT_VERSION
    return embs, {**info, "source": "computed", "cached": hit, "ties_skipped": ties}


def check_user_rows(cfg: Any, rows: Any) -> None:
    """Refuse, naming the recipe's keys, per-user pairs PPD cannot embed: no `user_id` column,
    or (embeddings computed, not given in `ppd.embeddings`) a user with fewer untied pairs than
    `ppd.shots`, the examples the encoder reads. Columns only, no image decoded: called when
    the rows open, before they are pre-encoded (which takes minutes), not once they are."""
    if "user_id" not in rows.column_names:
        raise ConfigError(
            f"ppd: data.path {cfg.data.path} has no user_id column; PPD trains on per-user "
            "pairs (e.g. toy:users with toy: {users: train})"
        )
    p = cfg.ppd
    if p.embeddings is not None:  # given: the users are checked against them later
        return
    labels = rows["label"] if "label" in rows.column_names else [None] * len(rows)
    counts: dict[str, int] = {}
    for user, label in zip(rows["user_id"], labels, strict=True):
        tied = label is not None and float(label) == 0.5  # no preference: no example (user_embed)
        counts[str(user)] = counts.get(str(user), 0) + (0 if tied else 1)
    short = {u: n for u, n in counts.items() if n < p.shots}
    if not short:
        return
    listed = ", ".join(f"{u} ({n})" for u, n in sorted(short.items())[:8])
    listed += f" and {len(short) - 8} more" if len(short) > 8 else ""
    more = "give more pairs per user in data.path"
    if cfg.data.path == "toy:users":
        from ..toy.rewards import USER_SETS

        users = USER_SETS.get(str((cfg.data.toy or {}).get("users", "named")), ())
        n = (cfg.data.toy or {}).get("n")
        more = (
            f"raise data.toy.n{f' (now {n})' if n is not None else ''}: toy:users deals its n "
            f"pairs over its {len(users) or 'N'} users, so ppd.shots {p.shots} needs n >= "
            f"{p.shots * len(users) if users else 'shots x users'}, more where pairs tie"
        )
    raise ConfigError(
        f"ppd.shots: {len(short)} user(s) of data.path {cfg.data.path} have fewer than "
        f"ppd.shots {p.shots} examples (untied pairs): {listed}; lower ppd.shots, or {more}"
    )


class PPDRecipe(DiffusionRecipe):
    """The diffusion recipe with PPD's user branch, per-pair users and branch-off reference."""

    scorer_class = PPDPairScorer

    def __init__(self, cfg: Any, accelerator: Any):
        super().__init__(cfg, accelerator)
        self.scorer.user_drop = float(cfg.ppd.user_drop)  # type: ignore[attr-defined]

    def _open_rows(self, model_source: str | None) -> Any:
        rows = super()._open_rows(model_source)
        check_user_rows(self.cfg, rows)  # before the pre-encoding, not after it
        return rows

    def _make_trainable(self) -> str:
        cfg = self.cfg
        row_users = [str(u) for u in self.rows["user_id"]]
        self.embeddings, self.embed_info = training_embeddings(
            cfg, self.rows, device=self.accelerator.device
        )
        missing = sorted(set(row_users) - set(self.embeddings))
        if missing:
            raise ConfigError(
                f"ppd.embeddings: no embedding for user(s) {', '.join(missing[:8])} of the data"
            )
        self.users = sorted(set(row_users))
        table = torch.stack([self.embeddings[u].float() for u in self.users])
        index = {u: i for i, u in enumerate(self.users)}
        self._row_user = torch.tensor([index[u] for u in row_users])
        self._table = table
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            # to_v_ip at zero: the policy starts as the reference, as DPO with LoRA does
            ppd.add_user_branch(
                self.model, int(table.shape[1]), seed=cfg.train.seed, zero_values=True
            )
        if self.accelerator.is_main_process:
            source = self.embed_info["source"]
            print(
                f"mmalign: PPD: {len(self.users)} users, embeddings of width {table.shape[1]} "
                f"({source}{', from cache' if self.embed_info['cached'] else ''})"
            )
        return "adapters"  # the scorer's reference is the branch off, not a copy

    def to_device(self, batch: Any, rows: list[int], device: torch.device) -> dict[str, Any]:
        out = super().to_device(batch, rows, device)
        out["user_embeds"] = self._table[self._row_user[rows]].to(device)
        return out

    @torch.no_grad()
    def validate(self, step: int):
        """The validation prompts for (up to) the first 3 training users, one row each."""
        from ..grid import image_grid
        from .recipe_base import validation_prompts

        prompts = validation_prompts(self.cfg.validation.prompts)
        # the pipeline chunks the embeddings into [negative; positive] only when it guides, as
        # it decides (a distilled base never does): `ppd.pipeline_embeds`, as `UserPipeline`
        guidance = self.validation_guidance()
        rows, labels = [], []
        with self._sampling():
            for user in self.users[:3]:
                e = self.embeddings[user].float()
                embeds = ppd.pipeline_embeds(self.diffusion.pipe, e, guidance)
                rows.append(self._sample(prompts, ip_adapter_image_embeds=embeds))
                labels.append(f"step {step}, user {user}")
        return image_grid(rows, labels, prompts)

    def save(self, output_dir: Path) -> dict[str, Any]:
        from ..vlm.user_embed import write_embeddings

        keys = ("encoder", "shots", "layer", "pooling", "prompt_format", "encoder_dtype")
        meta = {k: self.embed_info.get(k) for k in keys}  # a new user is embedded the same way
        meta["base"] = str(self.diffusion.source)  # named when loaded on another base
        if self.cfg.data.path == "toy:users":  # a new toy user's examples are drawn the same way
            opts = {k: v for k, v in (self.cfg.data.toy or {}).items() if k not in ("n", "users")}
            meta["examples_toy"] = opts
        path = ppd.save_adapter(self.model, output_dir, meta)
        write_embeddings(self.embeddings, output_dir, {**self.embed_info, "model": meta["encoder"]})
        return {"kind": "ppd", "path": str(path)}

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["ppd"] = {**self.embed_info, "users": self.users,
                      "embed_dim": int(self._table.shape[1])}  # fmt: skip
        return out
