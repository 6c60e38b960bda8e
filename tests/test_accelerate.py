"""`accelerate launch --num_processes 2 --cpu` trains like one process at the same global batch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from diffusion_helpers import read_metrics, save_tiny, tiny_config

from mmalign.config import dump_yaml
from mmalign.diffusion.recipe import DiffusionRecipe
from mmalign.train.loop import train

# Two processes each see half of every global batch, with the same pairs and the same noise
# (draws are seeded per pair position). What differs is float32 arithmetic: the encoders and
# the UNet run on batches of 2 instead of 4 (kernels sum in another order) and DDP averages
# two half-batch gradients. Measured: losses agree to ~3e-5 after one AdamW step. A wrong
# shard or unsynchronised gradients move them by ~3e-2 (measured with the processes not
# joined). 2e-4 sits well between the two.
TOLERANCE = 2e-4


def test_two_cpu_processes_match_one(tmp_path):
    tiny = save_tiny(tmp_path)
    single = tmp_path / "single"
    steps = {"max_steps": 4, "checkpoint_every": 100}
    train(tiny_config(tiny, single, train={**steps, "batch_size": 4}), DiffusionRecipe)
    multi = tmp_path / "multi"
    cfg = tiny_config(tiny, multi, train={**steps, "batch_size": 2})
    config_file = tmp_path / "multi.yaml"
    config_file.write_text(dump_yaml(cfg))
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert launcher is not None
    # Two torch processes on two cores: one OpenMP thread each. With accelerate 1.x,
    # `--cpu --num_processes 2` starts a single process; `--multi_gpu` with
    # ACCELERATE_USE_CPU=1 starts two CPU processes under DDP (gloo).
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    proc = subprocess.run(
        [launcher, "launch", "--num_processes", "2", "--multi_gpu", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "mmalign.cli", "train", str(config_file)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_metrics(single), read_metrics(multi)
    assert [m["step"] for m in a] == [m["step"] for m in b] == [1, 2, 3, 4]
    for x, y in zip(a, b, strict=True):
        assert abs(x["loss"] - y["loss"]) <= TOLERANCE, (x["step"], x["loss"], y["loss"])
    assert '"processes": 2' in (multi / "mmalign_run.json").read_text()


def test_two_cpu_processes_match_one_for_a_vlm(tmp_path):
    """The VLM scorer calls the language model inside DDP's wrapper directly; its policy pass
    must still run as the wrapper's forward, or DDP never averages the gradients and each
    process steps on its own half batch (grad norms differed by 20-40% before the fix)."""
    overrides = ["train.max_steps=3", "train.log_every=1", "train.checkpoint_every=100",
                 "data.toy.n=64", "validation.enabled=false", "train.trackers=[]"]  # fmt: skip
    single, multi = tmp_path / "single", tmp_path / "multi"
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    run = [sys.executable, "-m", "mmalign.cli", "train", "configs/toy/vlm_dpo.yaml", *overrides]
    one = subprocess.run([*run, "train.batch_size=4", f"output_dir={single}"], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert launcher is not None
    two = subprocess.run(
        [launcher, "launch", "--num_processes", "2", "--multi_gpu", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", *run[1:],
         "train.batch_size=2", f"output_dir={multi}"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = read_metrics(single), read_metrics(multi)
    assert [m["step"] for m in a] == [m["step"] for m in b] == [1, 2, 3]
    for x, y in zip(a, b, strict=True):
        assert abs(x["grad_norm"] - y["grad_norm"]) <= 1e-3 * x["grad_norm"], (x, y)
        assert abs(x["loss"] - y["loss"]) <= TOLERANCE, (x["step"], x["loss"], y["loss"])
