"""Under `accelerate launch` on GPUs the processes other than the main one wait at a barrier
while it builds what they all read: the pre-encoding cache (`diffusion.precompute`), SmPO's
soft labels (`data.smooth`) and the dense weights (`diffusion.dense`). A barrier is an NCCL
collective, and NCCL's default process-group timeout (10 minutes, what accelerate passes when
given none) stopped the waiting processes mid-build: a cache that takes longer than that could
never be built by a multi-GPU run (its partial folder is started over by every try). The
training loop now gives the process group a timeout long enough for those builds.

No GPU here: accelerate's `Accelerator` is replaced by a stub that records its arguments.
"""

from __future__ import annotations

from datetime import timedelta

import accelerate
import pytest
from accelerate.utils import InitProcessGroupKwargs

from mmalign.config import from_dict
from mmalign.train import loop
from mmalign.train.config import Config


class Built(Exception):
    pass


def _config(**train):
    return from_dict(
        Config,
        {"model": {"name_or_path": "toy:sd"}, "data": {"path": "toy:pairs", "split": "train"},
         "train": train},
    )  # fmt: skip


def _process_group_handlers(monkeypatch, cfg: Config) -> list[InitProcessGroupKwargs]:
    """The process-group settings `train` hands accelerate (its Accelerator a recorder)."""
    seen = {}

    def stub(**kwargs):
        seen.update(kwargs)
        raise Built

    monkeypatch.setattr(accelerate, "Accelerator", stub)
    with pytest.raises(Built):
        loop.train(cfg, lambda cfg, accelerator: None)
    return [h for h in seen.get("kwargs_handlers") or [] if isinstance(h, InitProcessGroupKwargs)]


def test_the_process_group_waits_for_the_main_process_builds(monkeypatch):
    cfg = _config()
    handlers = _process_group_handlers(monkeypatch, cfg)
    assert len(handlers) == 1
    assert handlers[0].timeout == timedelta(seconds=cfg.train.ddp_timeout)
    assert cfg.train.ddp_timeout >= 12 * 3600  # the default outlasts a long build
    # only the timeout is passed on: the backend stays accelerate's choice (gloo on CPUs)
    assert handlers[0].to_kwargs() == {"timeout": handlers[0].timeout}


def test_the_timeout_is_a_setting(monkeypatch):
    (handler,) = _process_group_handlers(monkeypatch, _config(ddp_timeout=1800))
    assert handler.timeout == timedelta(minutes=30)


@pytest.mark.parametrize("value", [0, -5])
def test_a_timeout_below_one_second_is_refused(value):
    with pytest.raises(ValueError, match=r"train\.ddp_timeout must be >= 1"):
        _config(ddp_timeout=value)
