"""Win rates with bootstrap intervals, and `mmalign eval winrate` end to end."""

from __future__ import annotations

import json

import torch
from diffusion_helpers import save_tiny, tiny_config

from mmalign.cli import main
from mmalign.data.prompts import resolve_prompts
from mmalign.diffusion.recipe import DiffusionRecipe
from mmalign.eval.winrate import win_stats
from mmalign.train.loop import train


def test_win_stats_by_hand():
    base = torch.tensor([0.1, 0.5, 0.5, 0.9], dtype=torch.float64)
    tuned = torch.tensor([0.2, 0.5, 0.4, 1.0], dtype=torch.float64)  # win, tie, loss, win
    r = win_stats(base, tuned)
    assert r["win_rate"] == 2.5 / 4
    assert (r["wins"], r["ties"], r["losses"], r["n"]) == (2, 1, 1, 4)
    assert abs(r["base_mean"] - 0.5) < 1e-12 and abs(r["tuned_mean"] - 0.525) < 1e-12
    assert r["tuned_median"] == 0.4  # torch.median: the lower of the two middle values
    lo, hi = r["ci95"]
    assert 0 <= lo < 0.625 < hi <= 1


def test_a_nan_score_is_an_error_not_a_loss():
    """NaN compares false both ways: counted, it was a silent loss for the tuned model."""
    import pytest

    base = torch.tensor([0.1, float("nan"), 0.5])
    tuned = torch.tensor([0.2, 0.3, float("nan")])
    with pytest.raises(ValueError, match=r"NaN for 1 base and 1 tuned image\(s\) of 3"):
        win_stats(base, tuned)


def test_the_interval_narrows_with_more_prompts():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(400, generator=g)
    tuned = base + 0.1 * torch.randn(400, generator=g) + 0.03
    small, large = win_stats(base[:40], tuned[:40]), win_stats(base, tuned)
    assert large["ci95"][1] - large["ci95"][0] < small["ci95"][1] - small["ci95"][0]


def test_toy_prompts_are_held_out_and_fixed():
    from mmalign.toy.world import is_heldout, parse_prompt

    prompts = resolve_prompts("toy:heldout")
    assert len(prompts) == 200 and prompts == resolve_prompts("toy:heldout")
    assert all(is_heldout(parse_prompt(p)) for p in prompts)
    assert len(resolve_prompts("toy:heldout:8")) == 8


def test_eval_winrate_command_writes_results_and_a_grid(tmp_path, capsys):
    tiny = save_tiny(tmp_path)
    run = tmp_path / "run"
    train(tiny_config(tiny, run, train={"max_steps": 2, "learning_rate": 1e-2}), DiffusionRecipe)
    out = tmp_path / "eval"
    code = main(["eval", "winrate", "--tuned", str(run), "--n", "6", "--steps", "3",
                 "--scorers", "toy:fidelity,toy:style", "--out", str(out)])  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    for name in ("toy:fidelity", "toy:style"):
        r = results["scorers"][name]
        assert set(r) >= {"win_rate", "ci95", "base_mean", "tuned_mean", "base_median",
                          "tuned_median", "n"}  # fmt: skip
        assert r["n"] == 6 and 0 <= r["ci95"][0] <= r["win_rate"] <= r["ci95"][1] <= 1
    fidelity, style = results["scorers"]["toy:fidelity"], results["scorers"]["toy:style"]
    top, below = fidelity["at_ceiling"], fidelity["below_ceiling"]
    assert top["ceiling"] == 1.0 and top["n"] + (below["n"] if below else 0) == 6
    assert "at_ceiling" not in style  # no known best score: no ceiling statistics
    assert (out / "grid.png").is_file()
    printed = capsys.readouterr().out
    assert "win rate" in printed
    # the split is printed only where some base images reach the ceiling and some do not
    assert ("where the base scores below 1:" in printed) == (below is not None and top["n"] > 0)


def test_eval_winrate_names_a_bad_scorer(tmp_path, capsys):
    tiny = save_tiny(tmp_path)
    code = main(["eval", "winrate", "--base", str(tiny), "--tuned", str(tiny), "--n", "2",
                 "--scorers", "toy:fidelty", "--out", str(tmp_path / "e")])  # fmt: skip
    assert code == 2
    assert "toy:fidelity" in capsys.readouterr().err


def test_sample_command_writes_a_grid(tmp_path, capsys):
    from PIL import Image

    tiny = save_tiny(tmp_path)
    out = tmp_path / "grid.png"
    code = main(["sample", str(tiny), "--prompt", "a red circle on a blue background",
                 "--prompt", "a green square on a white background", "--n", "2",
                 "--steps", "2", "--out", str(out)])  # fmt: skip
    assert code == 0 and "grid:" in capsys.readouterr().out
    assert Image.open(out).size[1] > 4 * 32  # four rows of images


def test_win_stats_below_the_ceiling_by_hand():
    """Prompts whose base is already perfect can only tie; `below_ceiling` leaves them out."""
    base = torch.tensor([1.0, 1.0, 1.0, 0.5, 0.5, 0.9, 0.8], dtype=torch.float64)
    tuned = torch.tensor([1.0, 1.0, 0.9, 0.6, 0.5, 0.8, 0.9], dtype=torch.float64)
    r = win_stats(base, tuned, ceiling=1.0)
    assert r["win_rate"] == 3.5 / 7  # wins 2, ties 3, losses 2 over all seven
    assert r["at_ceiling"] == {"ceiling": 1.0, "n": 3, "lost": 1}
    c = r["below_ceiling"]
    assert (c["wins"], c["ties"], c["losses"], c["n"], c["prompts"]) == (2, 1, 1, 4, 4)
    assert c["win_rate"] == 2.5 / 4
    assert 0 <= c["ci95"][0] < 2.5 / 4 < c["ci95"][1] <= 1
    assert "below_ceiling" not in win_stats(base, tuned)


def test_below_the_ceiling_keeps_prompts_with_any_image_below_it():
    """Two seeds per prompt: a prompt counts with the images below the ceiling it has."""
    base = torch.tensor([1.0, 0.5, 1.0, 1.0, 0.2, 0.4], dtype=torch.float64)
    tuned = torch.tensor([0.9, 0.7, 1.0, 1.0, 0.1, 0.4], dtype=torch.float64)
    c = win_stats(base, tuned, seeds_per_prompt=2, ceiling=1.0)["below_ceiling"]
    assert (c["n"], c["prompts"], c["wins"], c["ties"], c["losses"]) == (3, 2, 1, 1, 1)
    assert c["win_rate"] == 1.5 / 3
    base[:] = 1.0
    assert win_stats(base, tuned, seeds_per_prompt=2, ceiling=1.0)["below_ceiling"] is None
