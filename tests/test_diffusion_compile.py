"""`diffusion.compile`: the step's denoiser calls go through torch.compile and train the same.

The runs here compile with a recording backend (dynamo captures the graphs, which then run
eagerly), so a test takes seconds instead of inductor's minutes on a CPU and the losses must
match the eager run's exactly. Inductor itself was checked once by hand (four steps of the
tiny run: losses within 3e-5 of eager) and timed in benchmarks/diffusion_vs_diffusers.py.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from diffusion_helpers import read_metrics, save_tiny, tiny_config
from flow_helpers import MAX_SEQUENCE, save_tiny_flow
from safetensors.torch import load_file

from mmalign.diffusion.compiled import CompiledViews
from mmalign.diffusion.flow_recipe import diffusion_recipe
from mmalign.train.loop import train


class Recorder:
    """A torch.compile backend that keeps each captured graph and runs it eagerly."""

    def __init__(self) -> None:
        self.graphs: list[torch.fx.GraphModule] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs.append(gm)
        return gm.forward


@pytest.fixture
def recorder(monkeypatch):
    rec = Recorder()
    torch._dynamo.reset()
    recording = functools.partial(CompiledViews, backend=rec)
    for module in ("mmalign.diffusion.recipe", "mmalign.diffusion.flow_recipe"):
        monkeypatch.setattr(f"{module}.CompiledViews", recording)
    yield rec
    torch._dynamo.reset()


def test_views_share_the_modules_parameters_and_are_made_once():
    module = torch.nn.Linear(4, 4)
    assert CompiledViews(False)(module) is module
    views = CompiledViews(True)
    view = views(module)
    assert view is not module and view._orig_mod is module
    assert views(module) is view
    assert [p.data_ptr() for p in view.parameters()] == [p.data_ptr() for p in module.parameters()]
    assert list(view.state_dict()) != list(module.state_dict())  # why saving uses the module
    other = torch.nn.Linear(4, 4)
    assert views(other)._orig_mod is other


def _run(model: Path, out: Path, compile_: bool, sections=None, **extra):
    sections = {"train": {"max_steps": 4, "checkpoint_every": 100}, **(sections or {})}
    cfg = tiny_config(model, out, diffusion={"compile": compile_, **extra}, **sections)
    result = train(cfg, diffusion_recipe)
    return [m["loss"] for m in read_metrics(result.output_dir)], result.output_dir


def test_a_compiled_run_trains_exactly_like_an_eager_one(tmp_path, recorder):
    tiny = save_tiny(tmp_path)
    eager, eager_dir = _run(tiny, tmp_path / "eager", False)
    assert recorder.graphs == []
    losses, out = _run(tiny, tmp_path / "compiled", True)
    # the policy (with gradient) and the reference (adapters off, no gradient) are captured
    assert len(recorder.graphs) >= 2
    assert losses == eager
    name = "pytorch_lora_weights.safetensors"
    a, b = load_file(eager_dir / name), load_file(out / name)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


STEP = {"max_steps": 3, "checkpoint_every": 100}


@pytest.mark.parametrize(
    "sections, diffusion",
    [
        ({"lora": None, "train": STEP}, {}),  # full fine-tune: the frozen copy is compiled too
        ({"train": {**STEP, "gradient_checkpointing": True}}, {}),
        ({"train": STEP}, {"trajectory": "renoise", "renoise": {"steps": 3}}),  # SmPO's
    ],
    ids=["full-copy", "checkpointing", "renoise"],
)
def test_compiled_variants_train_exactly_like_eager(tmp_path, recorder, sections, diffusion):
    tiny = save_tiny(tmp_path)
    eager, _ = _run(tiny, tmp_path / "eager", False, sections, **diffusion)
    losses, _ = _run(tiny, tmp_path / "compiled", True, sections, **diffusion)
    assert len(recorder.graphs) >= 2
    assert losses == eager


def test_a_compiled_flow_run_trains_exactly_like_an_eager_one(tmp_path, recorder):
    model = save_tiny_flow(tmp_path, "sd3")
    flow = {"resolution": 32, "max_sequence_length": MAX_SEQUENCE, "process": "flow"}
    eager, _ = _run(model, tmp_path / "eager", False, **flow)
    losses, _ = _run(model, tmp_path / "compiled", True, **flow)
    assert len(recorder.graphs) >= 2
    assert losses == eager


def test_a_run_resumes_with_compile_switched_on(tmp_path, recorder):
    tiny = save_tiny(tmp_path)
    full, _ = _run(tiny, tmp_path / "full", False)
    part = tmp_path / "part"
    cfg = tiny_config(tiny, part, train={"max_steps": 2, "checkpoint_every": 2})
    train(cfg, diffusion_recipe)
    longer = {"max_steps": 4, "checkpoint_every": 2, "resume_from": "latest"}
    resumed = tiny_config(tiny, part, diffusion={"compile": True}, train=longer)
    train(resumed, diffusion_recipe)
    assert recorder.graphs
    assert [m["loss"] for m in read_metrics(part)] == full
