"""A checkpoint loads only into parameters of its own shapes.

`load_checkpoint` compared the parameter names alone and copied with `Tensor.copy_`, which
broadcasts: the [1, 4] weight of a `Linear(4, 1)` checkpoint loaded into a `Linear(4, 2)`
as two copies of its one row, silently (so would a rank-1 LoRA's A [1, n] and B [n, 1] into
any rank, a checkpoint resumed without its run's mmalign_run.json to compare recipes with).
"""

from __future__ import annotations

import pytest
import torch

from mmalign.train.checkpoint import load_checkpoint, save_checkpoint


def _state(model: torch.nn.Module):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return optimizer, scheduler


def test_a_checkpoint_of_other_shapes_is_refused(tmp_path):
    small = torch.nn.Linear(4, 1)
    path = save_checkpoint(tmp_path, 3, small, *_state(small))
    large = torch.nn.Linear(4, 2)
    before = large.weight.detach().clone()
    with pytest.raises(ValueError, match=r"weight: \[1, 4\] in the checkpoint, \[2, 4\]"):
        load_checkpoint(path, large, *_state(large))
    assert torch.equal(large.weight, before)  # nothing copied


def test_a_checkpoint_of_the_same_shapes_loads(tmp_path):
    a, b = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
    path = save_checkpoint(tmp_path, 3, a, *_state(a))
    assert load_checkpoint(path, b, *_state(b)) == 3
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_recovering_a_set_aside_checkpoint_tolerates_another_process_first(tmp_path, monkeypatch):
    """Every process of a run calls `recover_set_aside` on `resume_from=latest`: the one that
    comes second finds the folder renamed already (FileNotFoundError), which is not an error."""
    from pathlib import Path

    from mmalign.train.checkpoint import recover_set_aside

    root = tmp_path / "checkpoints"
    gone = root / ".checkpoint-3.removing"
    gone.mkdir(parents=True)
    (gone / "state.json").write_text('{"step": 3}')
    rename = Path.rename

    def raced(self: Path, target: Path) -> Path:
        if self == gone:  # the other process renamed it a moment ago
            rename(self, target)
            raise FileNotFoundError(self)
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", raced)
    recover_set_aside(root)  # no error
    assert (root / "checkpoint-3" / "state.json").is_file()
