"""SmPO's ReNoise trajectory for flow models: Euler inversion + fixed-point ReNoise steps."""

from __future__ import annotations

import pytest
import torch
from diffusion_helpers import read_metrics
from flow_helpers import empty_text, encoded_batch, save_tiny_flow, tiny_flow

from mmalign.diffusion.flow import FlowPairScorer, FlowSettings
from mmalign.diffusion.flow_trajectory import FlowReNoiseTrajectory
from mmalign.diffusion.renoise import ReNoiseSettings

B = 3
SEEDS = torch.arange(B) + 100


def _setup(family: str):
    model = tiny_flow(family)
    settings = FlowSettings(guidance=3.5 if family == "flux" else None)
    scorer = FlowPairScorer(model, empty_text(model), reference="none", settings=settings,
                            caption_dropout=0.0)  # fmt: skip
    batch = encoded_batch(model, B)
    x0 = torch.cat([batch["latents"][:, 0], batch["latents"][:, 1]])
    cond = scorer._conditioning(batch, torch.zeros(B, dtype=torch.bool))
    return model, scorer, batch, x0, scorer._velocity(model.transformer, cond)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_renoise_inverts_the_euler_sampler(family):
    """Sampling back down the grid with Euler reconstructs x0: ReNoise's fixed point exactly,
    one ReNoise iteration (SmPO's setting) better than plain Euler inversion."""
    _, scorer, _, x0, velocity = _setup(family)

    def error(iterations: int, average) -> float:
        settings = ReNoiseSettings(steps=10, iterations=iterations, average=average)
        trajectory = FlowReNoiseTrajectory(settings, scorer.shift)
        z = trajectory.invert(velocity, x0, torch.full((2 * B,), 9))
        assert trajectory.forwards == 10 * (iterations + 1)
        return float((trajectory.sample_back(velocity, z, 9) - x0).pow(2).mean())

    euler, smpo, fixed = error(0, None), error(1, (0, 2)), error(9, (9, 10))
    assert fixed < 1e-10 < 1e-6 < euler  # measured: ~6e-15 and ~1e-3 on both families
    assert smpo < 0.5 * euler


@pytest.mark.parametrize("family", ["sd3", "flux"])
@torch.no_grad()
def test_scorer_trains_on_the_inverted_latent(family):
    model, scorer, batch, x0, velocity = _setup(family)
    trajectory = FlowReNoiseTrajectory(ReNoiseSettings(steps=5), scorer.shift)
    scorer.trajectory = trajectory
    seen = {}
    handle = model.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True
    )
    scores = scorer(model.transformer, batch, SEEDS, with_reference=False)["main"]
    handle.remove()
    sigma, _, _ = scorer.draws(SEEDS, batch["latents"].shape[2:])
    index, snapped = trajectory.snap(sigma)
    assert set(snapped.tolist()) <= set(trajectory.grid.float().tolist())
    u = sigma / (scorer.shift - (scorer.shift - 1) * sigma)  # the unshifted draw
    assert ((index / 5 <= u + 1e-6) & (u < (index + 1) / 5 + 1e-6)).all()  # its u-share's level
    top = trajectory.snap(torch.tensor([0.999]))  # the top level trains too
    assert int(top[0]) == 4 and float(top[1]) == pytest.approx(1.0)
    t = seen["timestep"]  # the last (scored) forward: the snapped level, shared by the pair
    expected = snapped * 1000 if family == "sd3" else snapped
    torch.testing.assert_close(t, expected.repeat(2).to(t.dtype), atol=1e-3, rtol=1e-6)
    z = FlowReNoiseTrajectory(ReNoiseSettings(steps=5), scorer.shift).invert(
        velocity, x0, index.repeat(2)
    )
    s = snapped.repeat(2).view(-1, 1, 1, 1)
    eps = (z - (1 - s) * x0) / s
    cond = scorer._conditioning(batch, torch.zeros(B, dtype=torch.bool))
    cond2 = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in cond.items()}
    pred = scorer.predict(model.transformer, z, snapped.repeat(2), cond2)
    mse = (pred - (eps - x0)).pow(2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(-scores.chosen, mse[:B], atol=1e-6, rtol=0)
    torch.testing.assert_close(-scores.rejected, mse[B:], atol=1e-6, rtol=0)


def test_smpo_recipe_on_a_flow_model(tmp_path):
    from test_flow_train import _config, _train

    cfg = _config(save_tiny_flow(tmp_path, "sd3"), tmp_path / "out", trajectory="renoise",
                  renoise={"steps": 4})  # fmt: skip
    cfg.objective = [{"loss": "smpo", "beta": 50.0, "gamma": 10.0}]
    result, recipe = _train(cfg)
    assert recipe.scorer.trajectory is not None and recipe.scorer.trajectory.forwards > 0
    assert len(read_metrics(result.output_dir)) == 4
