"""Training checkpoints: the trainable weights, optimizer, LR schedule and step.

A checkpoint holds only what training changes (for LoRA, the adapter weights, not the base
model), as safetensors plus `torch.save` files read back with `weights_only=True`. It is
written to a temporary folder and renamed, so a folder named `checkpoint-N` is always
complete. The data position and the recipe's draws derive from the step; what draws from the
global generators (a VLM LoRA's dropout masks) continues from their states, kept per process in
`rng.pt`, so a resumed run continues with identical losses.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..files import make_readable
from ..suggest import closest

PATTERN = re.compile(r"^checkpoint-(\d+)$")


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: p.detach().to("cpu").contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer,
    scheduler,
    scaler=None,
    total_limit: int | None = None,
    extra: dict[str, Any] | None = None,
    rng_states: list[dict[str, Any]] | None = None,
) -> Path:
    root = Path(output_dir) / "checkpoints"
    final = root / f"checkpoint-{step}"
    tmp = root / f".checkpoint-{step}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
    make_readable(tmp / "trainable.safetensors")  # safetensors 0.8 leaves it 0600
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    if scaler is not None:
        torch.save(scaler.state_dict(), tmp / "scaler.pt")
    if rng_states is not None:  # one per process, by process index
        torch.save(rng_states, tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, **(extra or {})}, indent=2) + "\n")
    # A checkpoint of this step already there (a finished run resumed and saved again) is
    # renamed away, the new one takes its name, and only then is the old one deleted: deleting
    # it in place (seconds for a full fine-tune) left a listed, half-deleted `checkpoint-N`
    # when the process stopped meanwhile.
    replaced = _set_aside(final, root)
    tmp.rename(final)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)
    if total_limit is not None:
        for old in list_checkpoints(output_dir)[:-total_limit]:
            if (gone := _set_aside(old, root)) is not None:
                shutil.rmtree(gone, ignore_errors=True)
    return final


def _set_aside(path: Path, root: Path) -> Path | None:
    """Rename checkpoint folder `path` (if there) to a name `list_checkpoints` skips."""
    if not path.exists():
        return None
    gone = root / f".{path.name}.removing"
    shutil.rmtree(gone, ignore_errors=True)
    path.rename(gone)
    return gone


def recover_set_aside(root: Path) -> None:
    """Folders `_set_aside` left behind by a stop: one whose `checkpoint-N` is missing (stopped
    between setting the old one aside and renaming the new one in) is whole, since only the
    rename had happened, and gets its name back; any other (stopped while deleting it) is
    deleted now rather than kept on disk for good."""
    if not root.is_dir():
        return
    for gone in sorted(root.glob(".checkpoint-*.removing")):
        name = gone.name.removeprefix(".").removesuffix(".removing")
        try:
            if not (root / name).exists() and (gone / "state.json").is_file():
                gone.rename(root / name)
            else:
                shutil.rmtree(gone, ignore_errors=True)
        except FileNotFoundError:  # another process of the run recovered it first
            continue


def later_than(output_dir: str | Path, step: int) -> list[Path]:
    """The checkpoints of `output_dir` after `step`: a run resuming from `step` would replace
    the continuation they belong to (its metrics lines after `step` are dropped), so rotation
    would prune the new run's checkpoints as older than them and `resume_from=latest` would
    go back to them."""
    out = []
    for path in list_checkpoints(output_dir):
        match = PATTERN.match(path.name)
        if match and int(match.group(1)) > step:
            out.append(path)
    return out


def checkpoint_state(path: Path) -> dict[str, Any]:
    """The checkpoint's `state.json`: its step and what the loop saved beside it."""
    return json.loads((path / "state.json").read_text())


def resolve_resume(output_dir: str | Path, resume_from: str | None) -> Path | None:
    """`latest` -> the newest checkpoint in output_dir (None if there is none yet)."""
    if resume_from is None:
        return None
    if resume_from == "latest":
        recover_set_aside(Path(output_dir) / "checkpoints")
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume_from)
    if not (path / "state.json").is_file():
        raise FileNotFoundError(f"train.resume_from: {path} is not an mmalign checkpoint folder; "
                                + _resume_hint(path))  # fmt: skip
    return path


def _resume_hint(path: Path) -> str:
    """What `train.resume_from` takes, worded for the likely mistake: a typo of `latest`, or a
    run's output_dir where one of its checkpoints was meant."""
    if list_checkpoints(path):
        return f"it is a run's output_dir: give `latest`, or {path}/checkpoints/checkpoint-N"
    if not path.exists() and len(path.parts) == 1 and closest(str(path), ["latest"]):
        return "did you mean 'latest'?"
    return "give `latest` (the newest in output_dir) or OUTPUT_DIR/checkpoints/checkpoint-N"


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler, scaler=None) -> int:
    tensors = load_file(str(path / "trainable.safetensors"))
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(tensors) != expected:
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise ValueError(
            f"checkpoint {path} does not match the model being trained: "
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    params = dict(model.named_parameters())
    # `copy_` broadcasts: a [1, n] tensor would fill a [k, n] parameter with k copies of it
    shapes = [
        f"{name}: {list(value.shape)} in the checkpoint, {list(params[name].shape)} in the model"
        for name, value in tensors.items()
        if value.shape != params[name].shape
    ]
    if shapes:
        raise ValueError(
            f"checkpoint {path} does not match the model being trained: "
            f"{'; '.join(shapes[:3])}{'; ...' if len(shapes) > 3 else ''}"
        )
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)
    # read onto the CPU: a CUDA run's moments are tagged cuda:0, which a process without CUDA
    # cannot load and every process of `accelerate launch` would load onto GPU 0 first;
    # `load_state_dict` moves each state to its parameter's device
    optimizer.load_state_dict(_load(path / "optimizer.pt"))
    scheduler.load_state_dict(_load(path / "scheduler.pt"))
    _apply_schedule(optimizer, scheduler)
    if scaler is not None and (path / "scaler.pt").is_file():
        scaler.load_state_dict(_load(path / "scaler.pt"))
    return int(checkpoint_state(path)["step"])


def _load(file: Path) -> Any:
    """A `torch.save`d checkpoint file, its tensors on the CPU whatever device wrote them."""
    return torch.load(file, map_location="cpu", weights_only=True)


def _apply_schedule(optimizer, scheduler) -> None:
    """Set the learning rate of the resumed step from the schedule being run. The optimizer's
    saved rate is the old schedule's: a run resumed with a longer train.max_steps (a linear or
    cosine decay stretched over it) made its first step at the old end's rate (0) instead."""
    lambdas = getattr(scheduler, "lr_lambdas", None)  # diffusers' schedules are all LambdaLR
    if lambdas is None:
        return
    step = scheduler.last_epoch
    lrs = [base * fn(step) for base, fn in zip(scheduler.base_lrs, lambdas, strict=True)]
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = lrs


def rng_state() -> dict[str, Any]:
    """This process's global random states (torch, its CUDA device, numpy, python), in types a
    `torch.load(weights_only=True)` reads back."""
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, words, py_gauss = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, torch.tensor(words, dtype=torch.int64), py_gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def set_rng_state(state: dict[str, Any], source: str = "the saved random states") -> None:
    """Restore what `rng_state` returned. Its CUDA state goes to this process's current device
    (its own GPU under accelerate). Saved and restored on different hardware (CUDA on one side
    only) the CUDA part is skipped with a warning naming `source`: it only drives draws on a
    CUDA device, and a resume on other hardware is allowed, but it does not continue the run's
    draws exactly."""
    import numpy as np

    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, words, py_gauss = state["python"]
    random.setstate((version, tuple(words.tolist()), py_gauss))
    cuda = torch.cuda.is_available()
    if "cuda" in state and cuda:
        torch.cuda.set_rng_state(state["cuda"])
    elif "cuda" in state:
        warnings.warn(
            f"{source} holds a CUDA random state but this process has no CUDA: restored the "
            "CPU, numpy and python states only, so the resumed run does not draw exactly as "
            "the one it continues",
            stacklevel=2,
        )
    elif cuda and torch.cuda.is_initialized():
        warnings.warn(
            f"{source} holds no CUDA random state (saved by a process without CUDA): this "
            "process's CUDA generator keeps its own state, so the resumed run does not draw "
            "exactly as the one it continues",
            stacklevel=2,
        )


def load_rng_state(path: Path, rank: int) -> bool:
    """Restore process `rank`'s random states from checkpoint `path`; False when it has none
    (a checkpoint from before they were kept, or from a run with fewer processes)."""
    if not (path / "rng.pt").is_file():
        return False
    states = _load(path / "rng.pt")
    if rank >= len(states):
        return False
    set_rng_state(states[rank], f"{path / 'rng.pt'} (process {rank})")
    return True


def write_atomic(path: Path, text: str) -> None:
    """Write `path` through a temporary file renamed over it: a run stopped while writing
    (killed, a full disk) leaves the old file whole, not an empty one that a resume cannot
    read."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text)
    tmp.replace(path)


def window_state(accelerator: Any, window: dict[str, torch.Tensor], steps: int) -> dict[str, Any]:
    """The unlogged loss and grad_norm sums for a checkpoint, as the mean over the processes
    (every process resumes with it; the log line's mean over the processes stays the same)."""
    if not window:
        return {}
    keys = sorted(window)
    values = accelerator.reduce(torch.stack([window[k] for k in keys]), "mean").tolist()
    return {"window": dict(zip(keys, values, strict=True)), "window_steps": steps}
