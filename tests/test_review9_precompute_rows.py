"""`diffusion.precompute` encodes only the rows the run reads (mmalign/train/sampler.py,
mmalign/diffusion/encode.py).

It encoded every row of the data set before step 1: the shipped SD1.5 / SDXL / SD3 / FLUX
recipes pre-encoded all of Pick-a-Pic v2 (~850k pairs) for runs that read 2000 x 32 = 64k of
them, hours of encoding and terabytes of cache for rows never trained on. A run shorter than
one epoch reads the first max_steps x global batch rows of the seed's first permutation, and
only those are encoded now; the loop's sampler, the seeds, the losses and a resume are the
same, and the cache key names the rows. A run of an epoch or more (the toy recipes) encodes and
keys its cache as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusion_helpers import read_metrics, save_tiny, tiny_config

from mmalign.diffusion.recipe import DiffusionRecipe
from mmalign.train.loop import StepBatches, train

N = 48  # toy pairs: many more than a 2-step run of 2 pairs a step reads


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("models"))


def _config(tiny, out, steps, **train_options):
    return tiny_config(
        tiny, out, data={"toy": {"n": N, "rejected_source": "render", "progress": False}},
        train={"max_steps": steps, "batch_size": 2, "checkpoint_every": 2, **train_options},
        diffusion={"precompute": True},
    )  # fmt: skip


def _meta(recipe) -> dict:
    return json.loads((recipe.cache / "meta.json").read_text())


@pytest.mark.parametrize(("world", "accumulation"), [(1, 1), (2, 3), (3, 2)])
def test_the_rows_read_are_those_the_loops_sampler_draws(world, accumulation):
    from mmalign.train.sampler import rows_read

    n, steps, micro, seed = 500, 7, 4, 3
    drawn = set()
    for rank in range(world):
        batches = StepBatches(n, micro, accumulation, world, rank, seed)
        drawn |= {r for batch in batches.iterate(0, steps) for r in batch}
    got = rows_read(n, max_steps=steps, batch_size=micro, accumulation=accumulation,
                    world=world, seed=seed)  # fmt: skip
    assert got == sorted(drawn) and len(got) == steps * micro * accumulation * world
    # a resumed run reads a part of them
    later = StepBatches(n, micro, accumulation, world, 0, seed).iterate(4, steps)
    assert {r for batch in later for r in batch} <= set(got)
    # an epoch or more reads every row: None (the whole data set, as before)
    assert rows_read(n, max_steps=steps, batch_size=100, accumulation=accumulation,
                     world=world, seed=seed) is None  # fmt: skip


def test_a_short_run_encodes_only_its_rows_and_trains_the_same(tiny, tmp_path, capsys):
    plain = tiny_config(
        tiny, tmp_path / "plain",
        data={"toy": {"n": N, "rejected_source": "render", "progress": False}},
        train={"max_steps": 2, "batch_size": 2, "checkpoint_every": 2},
    )  # fmt: skip
    train(plain, DiffusionRecipe)
    result = train(_config(tiny, tmp_path / "cached", 2), DiffusionRecipe)
    assert "encoding the 4 of 48 pairs this run reads (2 steps x 2 pairs" in capsys.readouterr().out
    run = json.loads((tmp_path / "cached" / "mmalign_run.json").read_text())
    cache = Path(run["cache"])
    meta = json.loads((cache / "meta.json").read_text())
    assert (meta["rows"], meta["of"]) == (4, N)
    from safetensors.torch import load_file

    from mmalign.train.sampler import rows_read

    held = load_file(str(cache / "rows.safetensors"))["rows"].tolist()
    want = rows_read(N, max_steps=2, batch_size=2, accumulation=1, world=1, seed=0)
    assert held == want and run["rows"] == N  # the sampler still draws from all 48
    a = [m["loss"] for m in read_metrics(tmp_path / "plain")]
    b = [m["loss"] for m in read_metrics(tmp_path / "cached")]
    assert b == pytest.approx(a, abs=2e-4)  # the same rows and latents (seeded by row)
    assert result.final_metrics["step"] == 2


def test_the_key_names_the_rows_and_a_whole_epoch_keeps_the_old_cache(tiny, tmp_path):
    from accelerate import Accelerator

    from mmalign.diffusion.encode import EncodedPairs

    short = DiffusionRecipe(_config(tiny, tmp_path / "a", 2), Accelerator(cpu=True))
    other_seed = DiffusionRecipe(_config(tiny, tmp_path / "b", 2, seed=1), Accelerator(cpu=True))
    whole = DiffusionRecipe(_config(tiny, tmp_path / "c", N // 2), Accelerator(cpu=True))
    assert len({short.cache, other_seed.cache, whole.cache}) == 3
    assert _meta(short)["rows"] == _meta(other_seed)["rows"] == 4
    assert "of" not in _meta(whole) and _meta(whole)["rows"] == N
    assert not (whole.cache / "rows.safetensors").exists()  # a whole cache, written as before
    # the cache of some rows is indexed by the data set's rows: each holds that row's encoding
    from safetensors.torch import load_file

    held = load_file(str(short.cache / "rows.safetensors"))["rows"].tolist()
    for row in held:
        torch.testing.assert_close(short.dataset[row]["latents"], whole.dataset[row]["latents"])
    missing = next(r for r in range(N) if r not in held)
    with pytest.raises(LookupError, match=f"row {missing} is not in the pre-encoding cache"):
        EncodedPairs(short.cache)[missing]
    assert len(short.dataset) == len(whole.dataset) == N


def test_a_resumed_longer_run_continues_with_identical_losses(tiny, tmp_path):
    full = tmp_path / "full"
    train(_config(tiny, full, 4), DiffusionRecipe)
    part = tmp_path / "part"
    train(_config(tiny, part, 2), DiffusionRecipe)  # encodes its 4 rows
    shutil.rmtree(part / "checkpoints" / "checkpoint-2", ignore_errors=True)
    shutil.copytree(full / "checkpoints" / "checkpoint-2", part / "checkpoints" / "checkpoint-2")
    train(_config(tiny, part, 4, resume_from="latest"), DiffusionRecipe)  # 8 rows: a new cache
    a = {m["step"]: m["loss"] for m in read_metrics(full)}
    b = {m["step"]: m["loss"] for m in read_metrics(part)}
    for step in (3, 4):
        assert abs(a[step] - b[step]) <= 1e-6, (step, a[step], b[step])


def test_a_short_flow_run_encodes_only_its_rows_and_trains_the_same(tmp_path, capsys):
    from flow_helpers import MAX_SEQUENCE, save_tiny_flow

    from mmalign.diffusion.flow_recipe import diffusion_recipe

    model = save_tiny_flow(tmp_path, "sd3")
    losses = []
    for name, precompute in (("plain", False), ("cached", True)):
        flow = {"resolution": 32, "max_sequence_length": MAX_SEQUENCE, "process": "flow",
                "precompute": precompute}  # fmt: skip
        cfg = tiny_config(
            model, tmp_path / name, diffusion=flow, objective=[{"loss": "dpo", "beta": 50.0}],
            data={"toy": {"n": N, "rejected_source": "render", "progress": False}},
            train={"max_steps": 2, "batch_size": 2, "checkpoint_every": 2},
        )  # fmt: skip
        train(cfg, diffusion_recipe)
        losses.append([m["loss"] for m in read_metrics(tmp_path / name)])
    out = capsys.readouterr().out
    assert "encoding the 4 of 48 pairs this run reads" in out and "for 4 pairs" in out
    run = json.loads((tmp_path / "cached" / "mmalign_run.json").read_text())
    assert json.loads((Path(run["cache"]) / "meta.json").read_text())["rows"] == 4
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)
