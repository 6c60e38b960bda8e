"""Resuming the training loop, on a recipe of one linear layer (no model to load: fast).

- A resume with train.max_steps below the checkpoint's step saved the checkpoint's weights,
  optimizer and schedule as `checkpoint-<max_steps>` (state.json step <max_steps>) and handed
  them back as a <max_steps>-step run; with checkpoint_total_limit 1 it then pruned the
  folder it had just written.
- The log line after a resume averaged the loss and grad_norm over the steps since the
  checkpoint, not since the last log line as the unbroken run does (log_every 4, checkpoint
  at 3: step 4 logged step 4's loss alone).
- mmalign_run.json was rewritten in place: a run stopped while writing it (a full disk) left
  an empty file, and every later resume failed reading it (a JSONDecodeError traceback).
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch

from mmalign.config import ConfigError, from_dict
from mmalign.losses import PairScores
from mmalign.train import Config
from mmalign.train.checkpoint import list_checkpoints
from mmalign.train.loop import RUN_FILE, train


class _Rows(torch.utils.data.Dataset):
    def __init__(self, n: int = 10):
        self.x = torch.randn(n, 2, 4, generator=torch.Generator().manual_seed(1))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.x[i]


class LinearRecipe:
    """A linear scorer of feature pairs: chosen x[:, 0], rejected x[:, 1]."""

    def __init__(self, cfg, accelerator):
        self.model = torch.nn.Linear(4, 1)
        self.dataset = _Rows()

    def collate(self, items):
        return torch.stack(items)

    def to_device(self, batch, rows, device):
        return batch.to(device)

    def score(self, model, batch, seeds, *, with_reference):
        chosen, rejected = model(batch[:, 0]).squeeze(-1), model(batch[:, 1]).squeeze(-1)
        if not with_reference:
            return {"main": PairScores(chosen, rejected)}
        zero = torch.zeros_like(chosen)
        return {"main": PairScores(chosen, rejected, zero, zero)}

    def save(self, output_dir):
        return {"path": str(output_dir), "kind": "linear"}

    def validate(self, step):
        return None

    def describe(self):
        return {"family": "linear"}


def _config(out: Path, **train) -> Config:
    settings = {
        "max_steps": 6, "batch_size": 2, "learning_rate": 1e-2, "log_every": 1,
        "checkpoint_every": 3, "trackers": [], "lr_scheduler": "constant", **train,
    }  # fmt: skip
    raw = {
        "model": {"name_or_path": "toy:sd"},
        "data": {"path": "toy:style", "split": "train"},
        "objective": [{"loss": "dpo", "beta": 1.0}],
        "train": settings,
        "validation": {"enabled": False},
        "output_dir": str(out),
    }
    return from_dict(Config, raw)


def _metrics(out: Path) -> dict[int, dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return {m["step"]: m for m in map(json.loads, lines)}


def _interrupted_copy(full: Path, part: Path, step: int) -> None:
    (part / "checkpoints").mkdir(parents=True)
    name = f"checkpoint-{step}"
    shutil.copytree(full / "checkpoints" / name, part / "checkpoints" / name)


def test_max_steps_below_the_checkpoint_is_refused(tmp_path):
    out = tmp_path / "run"
    train(_config(out), LinearRecipe)
    with pytest.raises(ConfigError, match=r"train\.max_steps: 4 is below .* step 6"):
        train(_config(out, max_steps=4, resume_from="latest"), LinearRecipe)
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-3", "checkpoint-6"]
    # the same length (a finished run run again) and a longer one still resume
    assert train(_config(out, resume_from="latest"), LinearRecipe).steps == 6
    assert train(_config(out, max_steps=7, resume_from="latest"), LinearRecipe).steps == 7


def test_the_log_line_after_a_resume_averages_the_same_steps(tmp_path):
    settings = {"max_steps": 8, "log_every": 4, "checkpoint_every": 3}
    full, part = tmp_path / "full", tmp_path / "part"
    train(_config(full, **settings), LinearRecipe)
    _interrupted_copy(full, part, 3)
    train(_config(part, resume_from="latest", **settings), LinearRecipe)
    a, b = _metrics(full), _metrics(part)
    assert sorted(a) == sorted(b) == [4, 8]
    for step in (4, 8):
        for key in ("loss", "grad_norm", "main/dpo/margin"):
            assert a[step][key] == pytest.approx(b[step][key], abs=1e-6), (step, key)


def test_a_run_file_write_that_fails_leaves_the_run_resumable(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(_config(out), LinearRecipe)
    before = (out / RUN_FILE).read_text()
    real = Path.write_text

    def disk_full(self, data, *args, **kwargs):
        if RUN_FILE in self.name:  # truncated, then the write fails
            real(self, "", *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space left"):
        train(_config(out, resume_from="latest"), LinearRecipe)
    monkeypatch.setattr(Path, "write_text", real)
    assert (out / RUN_FILE).read_text() == before
    assert train(_config(out, max_steps=7, resume_from="latest"), LinearRecipe).steps == 7
