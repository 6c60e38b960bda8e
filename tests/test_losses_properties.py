"""Properties every registered loss must have, and the contract of the registry."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_scores
from hypothesis import given, settings
from hypothesis import strategies as st

from mmalign.losses import LOSSES, PairScores

ALL = sorted(LOSSES)


def with_grad(s: PairScores) -> PairScores:
    return dataclasses.replace(
        s,
        chosen=s.chosen.clone().requires_grad_(True),
        rejected=s.rejected.clone().requires_grad_(True),
    )


def test_registry_has_the_fifteen_losses():
    assert set(LOSSES) == {
        "dpo", "robust", "hinge", "ipo", "nca_pair", "bco_pair", "kto", "simpo", "cpo",
        "orpo", "sft", "dpop", "mapo", "smpo", "diffusion_kto",
    }  # fmt: skip
    reference_free = {name for name, loss in LOSSES.items() if loss.reference_free}
    assert reference_free == {"simpo", "cpo", "orpo", "sft", "mapo"}


@pytest.mark.parametrize("name", ALL)
def test_finite_differentiable_per_sample(name):
    s = with_grad(make_scores(batch=6, lengths=True))
    out = LOSSES[name](s)
    assert out.loss.shape == (6,)
    assert torch.isfinite(out.loss).all()
    out.loss.sum().backward()
    assert s.chosen.grad is not None and torch.isfinite(s.chosen.grad).all()
    assert s.chosen.grad.abs().sum() > 0  # the chosen score is always pushed
    for key in ("chosen_reward", "rejected_reward", "margin", "accuracy", "ranking_accuracy"):
        assert out.metrics[key].shape == (6,)
        assert not out.metrics[key].requires_grad


@pytest.mark.parametrize("name", ALL)
def test_low_precision_scores_are_upcast(name):
    s = make_scores(batch=4, lengths=True)
    half = PairScores(
        **{
            f.name: (v.bfloat16() if v is not None else None)
            for f in dataclasses.fields(s)
            for v in [getattr(s, f.name)]
        }
    )
    out = LOSSES[name](half)
    assert out.loss.dtype == torch.float32


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=25, deadline=None)
@given(
    base=st.floats(-5, -0.1),
    gap=st.floats(0.01, 3),
    ref=st.floats(-5, -0.1),
    seed=st.integers(0, 1000),
)
def test_swapping_a_preferred_pair_does_not_lower_the_loss(name, base, gap, ref, seed):
    """On pairs the policy already prefers (pi_c > pi_r, shared reference so delta > 0)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(4, generator=g, dtype=torch.float64) * 0.1
    chosen = base + noise
    s = PairScores(
        chosen=chosen,
        rejected=chosen - gap,
        ref_chosen=torch.full((4,), ref, dtype=torch.float64),
        ref_rejected=torch.full((4,), ref, dtype=torch.float64),
    )
    loss = LOSSES[name](s).loss
    # the other answer preferred: the swap without its label (a swap keeps the preference)
    swapped = LOSSES[name](dataclasses.replace(s.swapped(), label=None)).loss
    assert (swapped >= loss - 1e-9).all()


def test_robust_with_zero_eps_equals_dpo(scores):
    a = LOSSES["robust"](scores, beta=0.3, eps=0.0).loss
    b = LOSSES["dpo"](scores, beta=0.3).loss
    torch.testing.assert_close(a, b)


def test_dpo_with_label_one_equals_plain_dpo(scores):
    labelled = dataclasses.replace(scores, label=torch.ones_like(scores.chosen))
    torch.testing.assert_close(LOSSES["dpo"](labelled).loss, LOSSES["dpo"](scores).loss)


def test_dpo_soft_label_half_is_symmetric(scores):
    half = dataclasses.replace(scores, label=torch.full_like(scores.chosen, 0.5))
    torch.testing.assert_close(LOSSES["dpo"](half).loss, LOSSES["dpo"](half.swapped()).loss)


def test_smpo_with_label_half_gives_zero_gradient(scores):
    s = with_grad(dataclasses.replace(scores, label=torch.full_like(scores.chosen, 0.5)))
    LOSSES["smpo"](s, beta=2500.0).loss.sum().backward()
    assert torch.count_nonzero(s.chosen.grad) == 0
    assert torch.count_nonzero(s.rejected.grad) == 0


def test_smpo_with_gamma_one_and_label_one_is_diffusion_dpo(scores):
    """One beta scale: smpo takes dpo's beta (0.5 * the paper's beta_dpo 5000 for SDXL)."""
    labelled = dataclasses.replace(scores, label=torch.ones_like(scores.chosen))
    torch.testing.assert_close(
        LOSSES["smpo"](labelled, beta=2500.0, gamma=1.0).loss,
        LOSSES["dpo"](scores, beta=2500.0).loss,
    )


def test_mapo_loss_falls_when_chosen_mse_falls(scores):
    better = dataclasses.replace(scores, chosen=scores.chosen * 0.5)  # mse_c halves
    assert (LOSSES["mapo"](better).loss < LOSSES["mapo"](scores).loss).all()


@pytest.mark.parametrize("mse", [0.0, 1e-12, 1e-7, 1e-5, 1e-3, 50.0, 1e3])
def test_mapo_is_safe_for_any_mse(mse):
    chosen = torch.tensor([-mse, -mse], dtype=torch.float32, requires_grad=True)
    rejected = torch.tensor([-0.5, -mse], dtype=torch.float32)
    out = LOSSES["mapo"](PairScores(chosen=chosen, rejected=rejected))
    out.loss.sum().backward()
    assert torch.isfinite(out.loss).all() and torch.isfinite(chosen.grad).all()


def test_mapo_s_limit_at_zero_is_one():
    from mmalign.losses.diffusion import mapo_s

    x = torch.tensor([0.0, 1e-9, 1e-5, 2e-4], dtype=torch.float64)
    exact = torch.where(x == 0, torch.ones_like(x), 0.5 * x / torch.expm1(0.5 * x))
    torch.testing.assert_close(mapo_s(x, 0.5), exact, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", [n for n in ALL if not LOSSES[n].reference_free])
def test_reference_loss_without_reference_raises(name):
    s = make_scores()
    s.ref_chosen = None
    with pytest.raises(ValueError, match=rf"loss '{name}' needs reference scores.*ref_chosen"):
        LOSSES[name](s)


@pytest.mark.parametrize("name", [n for n in ALL if LOSSES[n].reference_free])
def test_reference_free_loss_runs_without_reference(name):
    s = make_scores()
    s.ref_chosen = s.ref_rejected = None
    assert torch.isfinite(LOSSES[name](s).loss).all()
