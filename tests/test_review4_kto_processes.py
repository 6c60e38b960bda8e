"""KTO's reference point z is one value for the whole global batch, on every process.

`kto` and `diffusion_kto` estimate z (the KL term) as the clamped, detached mean of the batch's
log-ratios. Under `accelerate launch` each process took that mean over its own share of the
batch, so the processes trained against different reference points and a run on two GPUs was
not the run on one at the same global batch. TRL's KTOTrainer and the Diffusion-KTO authors
take the mean over every process (gather, mean, then clamp), as the loop now does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmalign.losses import LOSSES, PairScores

TESTS = Path(__file__).resolve().parent


def _scores(lw: list[float], ll: list[float]) -> PairScores:
    zero = torch.zeros(len(lw), dtype=torch.float64)
    return PairScores(torch.tensor(lw, dtype=torch.float64),
                      torch.tensor(ll, dtype=torch.float64), zero, zero)  # fmt: skip


@pytest.mark.parametrize("loss", ["kto", "diffusion_kto"])
def test_z_is_the_mean_over_the_union_of_the_processes_samples(loss):
    from mmalign.losses.processes import across_processes

    # process 0: three pairs with a negative mean (alone it would clamp z to 0); process 1: one
    # pair that makes the union's mean positive. Unequal counts: the mean of the two processes'
    # means (0.75) is not the union's (0.375).
    mine = _scores([-1.0, -2.0, 0.5], [-0.5, 0.0, -1.0])
    theirs = _scores([9.0], [2.0])
    union = torch.tensor([-1.0, -2.0, 0.5, -0.5, 0.0, -1.0, 9.0, 2.0], dtype=torch.float64)
    expected = float(union.mean())
    assert expected == pytest.approx(0.875)

    sent: list[torch.Tensor] = []

    def record(t: torch.Tensor) -> torch.Tensor:  # process 1: what it contributes to the sum
        sent.append(t.clone())
        return t

    with across_processes(record):
        LOSSES[loss](theirs, beta=1.0)
    with across_processes(lambda t: t + sent[0]):  # process 0: the all-reduced sum
        out = LOSSES[loss](mine, beta=1.0)
    z = out.metrics["kl"]
    assert z.tolist() == pytest.approx([expected] * 3)
    # without a process group (eval, tests): this process's batch alone, clamped
    assert LOSSES[loss](mine, beta=1.0).metrics["kl"].tolist() == [0.0, 0.0, 0.0]
    # the loss uses that z: the terms at z = 0.875, by hand
    lw, ll = torch.tensor([-1.0, -2.0, 0.5]), torch.tensor([-0.5, 0.0, -1.0])
    terms = (1 - torch.sigmoid(lw - expected)) + (1 - torch.sigmoid(expected - ll))
    want = terms * (0.5 if loss == "kto" else 1.0)
    assert out.loss.tolist() == pytest.approx(want.tolist(), rel=1e-6)


def test_z_carries_no_gradient_through_the_reduction():
    from mmalign.losses.processes import across_processes

    lw = torch.tensor([1.0, 2.0], requires_grad=True)
    ll = torch.tensor([0.0, 1.0], requires_grad=True)
    s = PairScores(lw, ll, torch.zeros(2), torch.zeros(2))
    with across_processes(lambda t: t * 2):  # two processes with the same batch
        out = LOSSES["diffusion_kto"](s, beta=1.0)
    assert not out.metrics["kl"].requires_grad
    out.loss.sum().backward()
    assert lw.grad is not None and ll.grad is not None


SCRIPT = """
import json, sys
from dataclasses import replace
sys.path.insert(0, {tests!r})
from test_train_review_resume import LinearRecipe, _config
from mmalign.train.loop import train

out = __import__("pathlib").Path({out!r})


class Recording:
    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.needs_reference, self.pairs = inner.needs_reference, inner.pairs

    def __call__(self, scores, with_metrics=True):
        result = self.inner(scores, with_metrics=with_metrics)
        s = scores["main"]
        self.calls.append({{
            "samples": (s.chosen - s.ref_chosen).tolist() + (s.rejected - s.ref_rejected).tolist(),
            "z": float(result.terms["main/{loss}"].metrics["kl"][0]),
        }})
        return result


class KTORecipe(LinearRecipe):
    def __init__(self, cfg, accelerator):
        super().__init__(cfg, accelerator)
        self.objective = Recording(cfg.build_objective())
        self.rank = accelerator.process_index
        RECIPE.append(self)


RECIPE = []
cfg = _config(out, max_steps=3, batch_size=2, checkpoint_every=100)
cfg = replace(cfg, objective=[{{"loss": "{loss}", "beta": 1.0}}])
train(cfg, KTORecipe)
recipe = RECIPE[0]
(out / f"calls{{recipe.rank}}.json").write_text(json.dumps(recipe.objective.calls))
"""


@pytest.mark.parametrize("loss", ["diffusion_kto"])
def test_two_gloo_processes_share_one_reference_point(tmp_path, loss):
    out = tmp_path / "run"
    script = tmp_path / "kto_two.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), out=str(out), loss=loss))
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert launcher is not None
    # two CPU processes under DDP (gloo), as tests/test_accelerate.py starts them
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    proc = subprocess.run(
        [launcher, "launch", "--num_processes", "2", "--multi_gpu", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", str(script)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    calls = [json.loads((out / f"calls{rank}.json").read_text()) for rank in (0, 1)]
    assert len(calls[0]) == len(calls[1]) == 3  # one micro-step per step
    discriminates = False
    for a, b in zip(*calls, strict=True):
        assert a["samples"] != b["samples"]  # each process holds its own half of the batch
        union = torch.tensor(a["samples"] + b["samples"], dtype=torch.float64)
        expected = max(float(union.mean()), 0.0)
        assert a["z"] == b["z"], (a, b)
        assert a["z"] == pytest.approx(expected, rel=1e-6, abs=1e-7)
        local = [max(sum(c["samples"]) / len(c["samples"]), 0.0) for c in (a, b)]
        discriminates |= abs(local[0] - local[1]) > 1e-3
    # the check would catch per-process reference points on these batches
    assert discriminates
