"""The one training loop: every recipe (diffusion, VLM) runs through `train`.

A recipe owns the model and the data (see `Recipe`); the loop owns everything else:
accelerate for the device, mixed precision and multi-process (DDP), gradient accumulation,
the optimizer and schedule, checkpoints and resuming, metrics and validation.

Determinism: the pairs a step trains on and every random draw of a pair (the recipe gets one
seed per pair) are functions of (run seed, step, position in the global batch). So a resumed
run continues with the same losses, and `accelerate launch --num_processes N` with batch
`B/N` per process sees exactly the pairs and draws of one process with batch `B`.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from ..config import ConfigError, to_dict
from ..files import make_readable
from ..losses import PairScores
from ..losses.processes import across_processes
from . import reporting
from .checkpoint import (
    checkpoint_state,
    later_than,
    list_checkpoints,
    load_checkpoint,
    load_rng_state,
    resolve_resume,
    rng_state,
    save_checkpoint,
    window_state,
    write_atomic,
)
from .config import Config
from .displacement import DisplacementAlarm
from .optim import build_optimizer, build_scheduler, float32_master_weights
from .result import TrainResult
from .resume import RESUMABLE, recipe_changes

METRICS_FILE = "metrics.jsonl"
RUN_FILE = "mmalign_run.json"
ALARM_START = "displacement_start.json"  # the alarm's reference-free baseline (displacement.py)


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, ...); the message says where and what to do."""


class Recipe(Protocol):
    """What the loop needs from a model family."""

    model: torch.nn.Module  # the module that trains (its requires_grad parameters)
    dataset: torch.utils.data.Dataset  # rows the loop indexes

    def collate(self, items: list[Any]) -> Any: ...

    def to_device(self, batch: Any, rows: list[int], device: torch.device) -> Any: ...

    def score(
        self, model: torch.nn.Module, batch: Any, seeds: torch.Tensor, *, with_reference: bool
    ) -> dict[str, PairScores]: ...

    def save(self, output_dir: Path) -> dict[str, Any]: ...

    def validate(self, step: int) -> Any: ...  # a PIL image, or None

    def describe(self) -> dict[str, Any]: ...


class StepBatches:
    """Row indices for (step, micro-step, process): position p of the run's stream of pairs is
    row `perm_e[p % n]` of epoch `e = p // n`, each epoch a permutation seeded by (seed, e)."""

    def __init__(self, n: int, micro: int, accumulation: int, world: int, rank: int, seed: int):
        if n < 1:
            raise ValueError("the dataset has no rows to train on")
        self.n, self.micro, self.accumulation = n, micro, accumulation
        self.world, self.rank, self.seed = world, rank, seed
        self.global_batch = micro * world * accumulation
        self._perms: dict[int, torch.Tensor] = {}

    def positions(self, step: int, micro_step: int) -> torch.Tensor:
        start = step * self.global_batch + (micro_step * self.world + self.rank) * self.micro
        return torch.arange(start, start + self.micro)

    def rows(self, positions: torch.Tensor) -> list[int]:
        out = []
        for p in positions.tolist():
            epoch = p // self.n
            if epoch not in self._perms:
                self._perms = {epoch: torch.randperm(self.n, generator=_gen(self.seed, epoch))}
            out.append(int(self._perms[epoch][p % self.n]))
        return out

    def iterate(self, start_step: int, end_step: int) -> Iterator[list[int]]:
        for step in range(start_step, end_step):
            for micro_step in range(self.accumulation):
                yield self.rows(self.positions(step, micro_step))


def _gen(*salt: int) -> torch.Generator:
    value = 0
    for s in salt:
        value = (value * 1_000_003 + int(s)) % (2**62)
    return torch.Generator().manual_seed(value)


def pair_seeds(seed: int, positions: torch.Tensor) -> torch.Tensor:
    """One seed per pair, from the run seed and the pair's position in the run."""
    return (seed * 1_000_003 + 7) * 4_194_304 % (2**62) + positions


def train(cfg: Config, make_recipe: Callable[[Config, Any], Recipe]) -> TrainResult:
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs, gather_object

    tc = cfg.train
    out_dir = Path(cfg.output_dir)
    trackers = reporting.check_trackers(list(tc.trackers))
    accelerator = Accelerator(
        mixed_precision=tc.mixed_precision,
        log_with=trackers or None,
        project_dir=str(out_dir / "logs"),
        # the main process builds caches while the others wait (train.ddp_timeout)
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=tc.ddp_timeout))],
    )
    main = accelerator.is_main_process
    if tc.allow_tf32:  # Ampere+ GPUs: float32 matmuls in TF32 (cuDNN's is torch's default)
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(tc.seed)  # adapter initialisation is part of the run's seed
    recipe = make_recipe(cfg, accelerator)
    if cfg.lora is None:  # the recipe's frozen copies (the reference) keep the model's dtype
        float32_master_weights(recipe.model)
    # a recipe may train with an objective of its own (the VLM recipe's BPO extra-rows form)
    objective = getattr(recipe, "objective", None) or cfg.build_objective()
    world = accelerator.num_processes
    global_batch = tc.batch_size * world * tc.gradient_accumulation_steps
    lr = tc.learning_rate * (global_batch if tc.scale_lr else 1)
    if tc.gradient_checkpointing:
        _enable_gradient_checkpointing(recipe.model)
    params = [p for p in recipe.model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, tc, lr)
    scheduler = build_scheduler(optimizer, tc)
    model, optimizer = accelerator.prepare(recipe.model, optimizer)
    base = accelerator.unwrap_model(model)
    scaler = getattr(accelerator, "scaler", None)

    start_step = 0
    window: dict[str, torch.Tensor] = {}  # loss and grad_norm sums since the last log line
    window_steps = 0
    resume = resolve_resume(out_dir, tc.resume_from)
    if resume is not None:
        changes = recipe_changes(resume.parent.parent / RUN_FILE, to_dict(cfg))
        if changes:
            raise TrainingError(
                f"{resume} was trained with another recipe ({'; '.join(changes[:6])}"
                f"{'; ...' if len(changes) > 6 else ''}): a resumed run may change only "
                f"{', '.join(RESUMABLE)}. Choose another output_dir for the new recipe."
            )
        _check_processes(resume.parent.parent / RUN_FILE, world, global_batch)
        start_step = load_checkpoint(resume, base, optimizer, scheduler, scaler)
        if start_step > tc.max_steps:  # it would save step-N weights as checkpoint-max_steps
            raise ConfigError(
                f"train.max_steps: {tc.max_steps} is below the step of the checkpoint it resumes "
                f"({resume}, step {start_step}); set train.max_steps >= {start_step}, or choose "
                "another output_dir to train a shorter run from the start"
            )
        later = later_than(out_dir, start_step)
        if later:  # refused, not deleted: they are another continuation's weights
            raise TrainingError(
                f"{out_dir} holds checkpoints after the one this run resumes ("
                f"{', '.join(p.name for p in later)}); they belong to the run it would replace, "
                f"and rotation and resume_from=latest would mix them with this one. Delete them "
                f"to continue from {resume.name}, or resume into another output_dir"
            )
        # the log line after the checkpoint averages over the same steps as an unbroken run
        state = checkpoint_state(resume)
        window = {k: torch.tensor(v, device=accelerator.device)
                  for k, v in state.get("window", {}).items()}  # fmt: skip
        window_steps = int(state.get("window_steps", 0)) if window else 0
        if main:
            print(f"mmalign: resumed from {resume} at step {start_step}")
    elif main and tc.resume_from != "latest" and list_checkpoints(out_dir):
        raise TrainingError(
            f"{out_dir} already holds checkpoints; set train.resume_from=latest to continue "
            "that run, or choose another output_dir"
        )
    elif main and tc.resume_from == "latest":  # said, as diffusers' examples say it, not silent
        print(f"mmalign: no checkpoint in {out_dir}; starting from step 0", file=sys.stderr)
    metrics_path = out_dir / METRICS_FILE
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        reporting.rewrite_metrics(metrics_path, start_step)
        run = {"config": to_dict(cfg), **recipe.describe(), "processes": world}
        write_atomic(out_dir / RUN_FILE, json.dumps(run, indent=2, default=str) + "\n")
    if trackers:
        accelerator.init_trackers("mmalign", config=reporting.flat_hparams(to_dict(cfg)))

    sampler = StepBatches(
        len(recipe.dataset), tc.batch_size, tc.gradient_accumulation_steps, world,
        accelerator.process_index, tc.seed,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        recipe.dataset,
        batch_sampler=list(sampler.iterate(start_step, tc.max_steps)),
        collate_fn=recipe.collate,
        num_workers=cfg.data.num_workers,
        # pinned by the loader's own thread beside the workers, for faster copies to the GPU
        pin_memory=accelerator.device.type == "cuda" and cfg.data.num_workers > 0,
    )
    batches = iter(loader)
    last_good = str(list_checkpoints(out_dir)[-1]) if list_checkpoints(out_dir) else "none"
    logged: dict[str, float] = {}
    started = time.perf_counter()
    bar = tqdm(total=tc.max_steps, initial=start_step, desc="train", unit="step", disable=not main)
    model.train()
    # VLM recipes: chosen / rejected log-likelihood change since the start, and a warning
    alarm = None
    if cfg.model.kind == "vlm":
        # the main pair, or the objective's first where it has none (the scorer makes no other)
        pairs = objective.pairs
        alarm = DisplacementAlarm(
            cfg.vlm.displacement_alarm, pair="main" if "main" in pairs else pairs[0],
            start_file=out_dir / ALARM_START, resume=start_step > 0,
        )  # fmt: skip
    # without a reference the alarm measures from the starting model's scores on the first
    # batch, taken before the first update
    alarm_start = alarm is not None and not objective.needs_reference and alarm.start is None
    if resume is not None:  # last, after whatever drew from them since the process started
        load_rng_state(resume, accelerator.process_index)
    for step in range(start_step, tc.max_steps):
        done = step + 1
        # The full metric set only on a step that logs; the others keep the loss and the
        # gradient norm alone (about 15 small tensor ops fewer per micro-step).
        log_now = done % tc.log_every == 0 or done == tc.max_steps
        full = log_now or (alarm_start and step == start_step)
        sums: dict[str, torch.Tensor] = {}
        for micro in range(tc.gradient_accumulation_steps):
            positions = sampler.positions(step, micro)
            rows = sampler.rows(positions)
            batch = recipe.to_device(next(batches), rows, accelerator.device)
            seeds = pair_seeds(tc.seed, positions)
            last = micro == tc.gradient_accumulation_steps - 1
            sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
            with sync, accelerator.autocast():
                scores = recipe.score(model, batch, seeds, with_reference=objective.needs_reference)
                finite = reporting.all_finite(scores)
                if accelerator.reduce(finite, "sum").item() == world:
                    # batch statistics in the losses (KTO's z) over the global batch
                    with across_processes(lambda t: accelerator.reduce(t, "sum")):
                        out = objective(scores, with_metrics=full)
                    finite = torch.isfinite(out.loss.detach()).float()
            if accelerator.reduce(finite, "sum").item() < world:
                raise TrainingError(
                    f"step {step + 1}: the loss is not finite (NaN or inf scores); stopped "
                    f"before the update. Last good checkpoint: {last_good}. Lower the learning "
                    "rate or beta and train again in another output_dir (a resumed run keeps its "
                    "recipe, and without a change it meets the same NaN)"
                )
            accelerator.backward(out.loss / tc.gradient_accumulation_steps)
            metrics = (
                {**out.metrics, **reporting.pair_metrics(scores)} if full else {"loss": out.loss}
            )
            for key, value in metrics.items():
                value = value.detach().float() / tc.gradient_accumulation_steps
                sums[key] = sums.get(key, 0) + value
        # the norm before clipping; logged without clipping too (an infinite bound scales by 1)
        clip = tc.max_grad_norm if tc.max_grad_norm is not None else math.inf
        norm = accelerator.clip_grad_norm_(params, clip)
        if norm is not None:  # DeepSpeed clips inside its engine and may not report a norm
            sums["grad_norm"] = torch.as_tensor(norm).detach().float()
        if alarm is not None and alarm_start and step == start_step:
            keys = alarm.start_keys
            first = accelerator.reduce(torch.stack([sums[k].to(accelerator.device) for k in keys]),
                                       "mean").tolist()  # fmt: skip
            alarm.set_start(first[0], first[1], write=main, step=start_step)
            if not log_now:  # the full metrics were for the baseline only
                sums = {k: v for k, v in sums.items() if k in ("loss", "grad_norm")}
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        # a step the fp16 grad scaler skipped (inf / NaN gradients) leaves the schedule too
        if not accelerator.optimizer_step_was_skipped:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        for key in ("loss", "grad_norm"):
            if key in sums:
                window[key] = window.get(key, 0) + sums.pop(key).to(accelerator.device)
        window_steps += 1
        if log_now:
            # loss and grad_norm: the mean over the steps since the last line; the other
            # metrics: this step's. Then the mean over the processes.
            keys = sorted({*window, *sums})
            values = torch.stack([
                window[k] / window_steps if k in window else sums[k].to(accelerator.device)
                for k in keys
            ])  # fmt: skip
            values = accelerator.reduce(values, "mean")
            window, window_steps = {}, 0
            logged = {k: float(v) for k, v in zip(keys, values.tolist(), strict=True)}
            if alarm is not None:
                logged.update(alarm.update(done, logged))
            if main:
                record = {"step": done, "loss": logged.pop("loss"), "lr": float(lr)}
                record.update(logged)
                logged = record
                with metrics_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                bar.set_postfix(reporting.progress_postfix(record))
            if trackers:
                accelerator.log({k: v for k, v in logged.items() if k != "step"}, step=done)
        if done % tc.checkpoint_every == 0 and done < tc.max_steps:
            extra = window_state(accelerator, window, window_steps)
            rngs = gather_object([rng_state()])
            if main:
                last_good = str(
                    save_checkpoint(
                        out_dir, done, base, optimizer, scheduler, scaler,
                        tc.checkpoint_total_limit, extra, rngs,
                    )
                )  # fmt: skip
            accelerator.wait_for_everyone()
        if cfg.validation.enabled and cfg.validation.every and done % cfg.validation.every == 0:
            reporting.validate(accelerator, recipe, out_dir, done)
    bar.close()
    accelerator.wait_for_everyone()
    rngs = gather_object([rng_state()])
    saved: dict[str, Any] = {}
    if main:
        save_checkpoint(
            out_dir, tc.max_steps, base, optimizer, scheduler, scaler, tc.checkpoint_total_limit,
            rng_states=rngs,
        )  # fmt: skip
        saved = recipe.save(out_dir)
        make_readable(out_dir)  # the weights' writers (safetensors 0.8) leave them 0600
        run = json.loads((out_dir / RUN_FILE).read_text())
        run["final"] = saved
        write_atomic(out_dir / RUN_FILE, json.dumps(run, indent=2, default=str) + "\n")
    if cfg.validation.enabled and not (
        cfg.validation.every and tc.max_steps % cfg.validation.every == 0
    ):
        reporting.validate(accelerator, recipe, out_dir, tc.max_steps)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    seconds = time.perf_counter() - started
    return TrainResult(out_dir, tc.max_steps, logged, saved, seconds, start_step)


def _check_processes(run_file: Path, world: int, global_batch: int) -> None:
    """A resumed run keeps the process count of the run it resumes: the step's pairs are
    positions in a stream of `global_batch` pairs a step, and train.batch_size may not change,
    so another count meant another global batch (other rows; with scale_lr the old rate)."""
    if not run_file.is_file():
        return
    saved = json.loads(run_file.read_text()).get("processes")
    if saved is None or int(saved) == world:
        return
    old = global_batch // world * int(saved)
    raise TrainingError(
        f"{run_file.parent} was trained with {saved} processes (global batch {old}); this run "
        f"has {world} (global batch {global_batch}), which would read other rows at every step. "
        f"Resume it with `accelerate launch --num_processes {saved}`, or choose another "
        "output_dir"
    )


def _enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """diffusers models call it `enable_gradient_checkpointing`, transformers (and PEFT) models
    `gradient_checkpointing_enable`; the non-reentrant form needs no input gradients, which
    frozen embeddings under LoRA would not give."""
    if hasattr(model, "enable_gradient_checkpointing"):
        model.enable_gradient_checkpointing()
    elif hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        raise ValueError(
            f"train.gradient_checkpointing: {type(model).__name__} does not support it"
        )
