"""Training checkpoints: replacing one of the same step, and keeping the newest few.

- Saving a step whose checkpoint already existed (a finished run resumed, as `make demo` does
  the second time) deleted the old `checkpoint-N` in place before renaming the new one in:
  stopped during that deletion (seconds for a full fine-tune), the run was left with a listed,
  half-deleted checkpoint as its latest, which a resume could not load.
- train.checkpoint_total_limit was not checked: -1 deleted every checkpoint as it was
  written (the final one too), 0 kept them all.
"""

from __future__ import annotations

import pytest
import torch

from mmalign.config import ConfigError, from_dict
from mmalign.train import Config
from mmalign.train import checkpoint as ck


def _state():
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return model, optimizer, scheduler


def test_a_stop_while_replacing_a_checkpoint_leaves_a_whole_one(tmp_path, monkeypatch):
    model, optimizer, scheduler = _state()
    ck.save_checkpoint(tmp_path, 3, model, optimizer, scheduler)
    ck.save_checkpoint(tmp_path, 6, model, optimizer, scheduler)
    real = ck.shutil.rmtree

    def killed_while_deleting(path, ignore_errors=False):
        if (path / "trainable.safetensors").is_file() and not path.name.endswith(".partial"):
            (path / "trainable.safetensors").unlink()  # the deletion got this far
            raise KeyboardInterrupt
        return real(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(ck.shutil, "rmtree", killed_while_deleting)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path, 6, model, optimizer, scheduler)
    monkeypatch.setattr(ck.shutil, "rmtree", real)
    latest = ck.list_checkpoints(tmp_path)[-1]
    assert latest.name == "checkpoint-6"
    fresh, fresh_opt, fresh_sched = _state()
    assert ck.load_checkpoint(latest, fresh, fresh_opt, fresh_sched) == 6
    assert torch.equal(fresh.weight, model.weight)


def test_pruning_keeps_the_newest(tmp_path):
    model, optimizer, scheduler = _state()
    for step in (3, 6, 9):
        ck.save_checkpoint(tmp_path, step, model, optimizer, scheduler, total_limit=2)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["checkpoint-6", "checkpoint-9"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "checkpoint-6",
        "checkpoint-9",
    ]


@pytest.mark.parametrize("limit", [0, -1])
def test_a_total_limit_below_one_is_a_config_error(limit):
    raw = {
        "model": {"name_or_path": "toy:sd"},
        "data": {"path": "toy:style", "split": "train"},
        "train": {"checkpoint_total_limit": limit},
    }
    with pytest.raises(ConfigError, match=r"train\.checkpoint_total_limit must be >= 1"):
        from_dict(Config, raw)
    raw["train"] = {"checkpoint_total_limit": None}
    assert from_dict(Config, raw).train.checkpoint_total_limit is None


def test_a_stop_in_the_rename_gap_keeps_the_old_checkpoint(tmp_path):
    """Stopped after the old checkpoint-N was set aside and before the new one took its name:
    the next resume finds the old one back under its name; a half-deleted leftover (its
    checkpoint-N exists) is cleared instead of staying on disk."""
    model, optimizer, scheduler = _state()
    ck.save_checkpoint(tmp_path, 3, model, optimizer, scheduler)
    ck.save_checkpoint(tmp_path, 6, model, optimizer, scheduler)
    root = tmp_path / "checkpoints"
    (root / "checkpoint-6").rename(root / ".checkpoint-6.removing")  # the stop, in the gap
    assert ck.resolve_resume(tmp_path, "latest") == root / "checkpoint-6"
    assert (root / "checkpoint-6" / "state.json").is_file()
    (root / ".checkpoint-3.removing").mkdir()  # a deletion stopped halfway, checkpoint-3 whole
    assert ck.resolve_resume(tmp_path, "latest") == root / "checkpoint-6"
    assert not (root / ".checkpoint-3.removing").exists() and (root / "checkpoint-3").is_dir()
