"""toy-vlm's training: the settings, and the resumable two-stage loop (the vision tower alone,
then the whole model on answers), checkpointed so an interrupted build resumes exactly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ...qa import GROUPS, STYLES, Group, sample_conversations, sample_qa
from ...world import SHAPES
from ..checkpoint import fingerprint_of, load_checkpoint, save_checkpoint, state_under
from ..schedule import lr_factor
from .model import Encoder, ToyVLMArch, to_pixel_values


@dataclass
class ToyVLMSettings:
    seed: int = 0
    # Stage 1: the vision tower learns the toy attributes (LLaVA starts from a pretrained CLIP).
    vision_steps: int = 1500
    vision_batch: int = 64
    vision_lr: float = 2e-3
    # Stage 2: the whole model learns to answer, loss on answer tokens only.
    steps: int = 5000
    batch_size: int = 32
    groups: tuple[Group, ...] = GROUPS  # training conversations (see `GROUPS`)
    # Presence is learnt last (chance level after 1500 steps, with two or three LM layers
    # alike): two thirds of the conversations ask it.
    group_weights: tuple[float, ...] = (1.0, 3.0, 0.5)
    color_swap: float = 0.5  # share of "no" presence questions that differ in colour
    refusal_share: float = 0.15  # share of forbidden requests answered with REFUSAL
    lr: float = 2e-3
    vision_lr_scale: float = 0.0  # stage 2 rate of the tower; 0 freezes it, as LLaVA does
    warmup: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    eval_n: int = 400
    styles: tuple[str, ...] = STYLES
    arch: ToyVLMArch = field(default_factory=ToyVLMArch)

    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed (everything that changes training)."""
        d = asdict(self)
        for key in ("eval_n", "checkpoint_every"):
            d.pop(key)
        return fingerprint_of(d)


def _adamw(
    module: torch.nn.Module, lr: float, weight_decay: float, scales: dict[str, float] | None = None
) -> torch.optim.AdamW:
    """AdamW without decay on norms, biases and embeddings (as usual for transformers); the
    parameters under a prefix of `scales` train at that multiple of the rate."""
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        scale = next((v for k, v in (scales or {}).items() if name.startswith(k)), 1.0)
        groups.setdefault((scale, p.ndim >= 2 and "embed" not in name), []).append(p)
    return torch.optim.AdamW(
        [{"params": ps, "scale": scale, "weight_decay": weight_decay if decay else 0.0}
         for (scale, decay), ps in groups.items()],
        lr=lr, betas=(0.9, 0.98),
    )  # fmt: skip


def _unique_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """`module`'s state with tied tensors (embeddings = lm_head) kept once: safetensors
    refuses shared storage, and loading one copy restores both."""
    seen: set[int] = set()
    out = {}
    for k, v in module.state_dict().items():
        if v.data_ptr() not in seen:
            seen.add(v.data_ptr())
            out[k] = v.contiguous()
    return out


def _resume(path: Path, module: torch.nn.Module, opt, fingerprint: str) -> int:
    """Restore module, optimizer and RNG from `path`; returns the step to continue from (0 when
    there is no checkpoint)."""
    found = load_checkpoint(
        path, fingerprint, opt, "pass resume=False to start over, or another work_dir", rng=True
    )
    if found is None:
        return 0
    tensors, meta = found
    missing = module.load_state_dict(state_under(tensors, "model"), strict=False).missing_keys
    # Tied tensors were saved once (see `_unique_state`): only they may be missing.
    if set(missing) - (set(module.state_dict()) - set(_unique_state(module))):
        raise ValueError(f"checkpoint {path} lacks {sorted(missing)[:5]}")
    return int(meta["step"])


def _fit(
    name: str, module: torch.nn.Module, loss_at: Callable[[int], torch.Tensor], steps: int,
    lr: float, settings: ToyVLMSettings, ckpt: Path, *, progress: bool, resume: bool,
    stop_after: int | None, scales: dict[str, float] | None = None, position: int = 0,
) -> list[float]:  # fmt: skip
    """The resumable loop both stages share: AdamW, warmup + cosine, clipping, checkpoints of
    module + optimizer + step + RNG every `checkpoint_every` steps. `loss_at(step)` must draw
    its data from the step alone (one generator per step), so a resumed run sees exactly the
    batches an uninterrupted one would."""
    fp = settings.fingerprint()
    opt = _adamw(module, lr, settings.weight_decay, scales)
    start = _resume(ckpt, module, opt, fp) if resume else 0
    end = steps if stop_after is None else min(steps, stop_after)
    module.train()
    losses: list[float] = []
    bar = tqdm(range(start, end), desc=name, disable=not progress, initial=start, total=steps,
               position=position)  # fmt: skip
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr * group["scale"] * lr_factor(step, steps, settings.warmup)
        loss = loss_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), settings.grad_clip)
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == end:
            meta = {"step": step + 1, "fingerprint": fp}
            save_checkpoint(ckpt, {"model": _unique_state(module)}, opt, meta, rng=True)
    # Stale gradients would otherwise enter the next stage's clipping norm (the tower's, frozen
    # in stage 2) and make an uninterrupted run differ from a resumed one.
    module.zero_grad(set_to_none=True)
    module.eval()
    return losses


def train(
    model, tokenizer, settings: ToyVLMSettings, work_dir: str | Path, *, progress: bool = True,
    resume: bool = True, stop_after: int | None = None, position: int = 0,
) -> list[float]:  # fmt: skip
    """Train `model` in place, resuming from `work_dir`; returns the losses of the steps run.

    Stage 1 (`vision_steps`) pretrains the CLIP tower alone: a linear head on its mean patch
    feature classifies the shape (then is discarded), on train-split renders (adding colour and
    background heads measured worse: held-out shape accuracy 0.66 vs 0.86). Trained from
    scratch through the answer loss, the tiny ViT stalls: it lowers the loss faster by guessing
    the shape from the colours (combinations it has seen), which fails on held-out ones. The
    pretrained tower stands in for LLaVA's pretrained CLIP. Stage 2 (`steps`) trains everything
    on multi-turn QA (the tower at `vision_lr_scale` of the rate), loss on answers + EOS only.
    `stop_after` counts steps over both stages and ends early (after a checkpoint), as an
    interruption would: the resume test uses it."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    lm_ckpt, vision_ckpt = work / "checkpoint.safetensors", work / "vision.safetensors"
    losses: list[float] = []
    if not (resume and lm_ckpt.is_file()) and settings.vision_steps > 0:
        tower = model.model.vision_tower
        hidden = tower.config.hidden_size
        torch.manual_seed(settings.seed + 1)
        stage1 = torch.nn.ModuleDict({
            "tower": tower, "head": torch.nn.Linear(hidden, len(SHAPES))
        })  # fmt: skip

        def vision_loss(step: int) -> torch.Tensor:
            gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + 500_000 + step)
            items, images = sample_qa(settings.vision_batch, "train", gen, settings.styles)
            feats = tower(pixel_values=to_pixel_values(images)).last_hidden_state[:, 1:]
            target = torch.tensor([SHAPES.index(it.prompt.shape) for it in items])
            return torch.nn.functional.cross_entropy(stage1["head"](feats.mean(1)), target)

        losses += _fit(
            "toy-vlm vision", stage1, vision_loss, settings.vision_steps, settings.vision_lr,
            settings, vision_ckpt, progress=progress, resume=resume, stop_after=stop_after,
            position=position,
        )  # fmt: skip
        if stop_after is not None and stop_after <= settings.vision_steps:
            return losses
    encoder = Encoder(tokenizer, settings.arch.image_tokens)

    def answer_loss(step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
        convs, images = sample_conversations(
            settings.batch_size, "train", gen, settings.groups, settings.group_weights,
            settings.color_swap, settings.styles, settings.refusal_share,
        )  # fmt: skip
        return model(**encoder.batch(convs), pixel_values=to_pixel_values(images)).loss

    rest = None if stop_after is None else stop_after - settings.vision_steps
    tower = model.model.vision_tower
    tower.requires_grad_(settings.vision_lr_scale > 0)
    try:
        losses += _fit(
            "toy-vlm", model, answer_loss, settings.steps, settings.lr, settings, lm_ckpt,
            progress=progress, resume=resume, stop_after=rest,
            scales={"model.vision_tower.": settings.vision_lr_scale}, position=position,
        )  # fmt: skip
    finally:
        tower.requires_grad_(True)
    return losses
