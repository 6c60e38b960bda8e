"""Review 7: eval papercuts.

- `eval accuracy --model RUN` ignored `--scorer-path`, `--scorer-dtype`, `--tune-on` and
  `--threshold` (no reward scorer loads there: the diffusion model's implicit reward scores the
  pairs), and `--scorer NAME` ignored `--base` and `--draws`: each is now refused, naming it.
- `eval flaws` printed bare intervals ("tuned 2.37% (1.49%-3.26%)") and area changes in "%":
  every interval is now named a 95% CI, what it is a bootstrap of is said once, and changes of
  area are in percentage points.
- A training run's `mmalign_run.json` said `skipped: {}` for toy data whose build dropped tied
  pairs: it now records ties apart (`ties: {dropped, kept}`), skipped rows by reason.
"""

from __future__ import annotations

import json

import pytest
from test_eval_flaws import fake_eval  # an eval winrate folder of given images

from mmalign.cli import main

# ---------------------------------------------------------------- eval accuracy: stray options


@pytest.fixture
def implicit_calls(monkeypatch):
    """`implicit_accuracy` replaced by a recorder: no model loads."""
    import mmalign.eval.implicit as implicit

    calls: list[dict] = []

    def fake(model, data, **kwargs):
        calls.append(kwargs)
        return {"model": model, "base": "b", "data": data, "implicit_accuracy": 0.5,
                "pairs": 1, "draws": kwargs["draws"], "ties_left_out": 0, "skipped": 0}  # fmt: skip

    monkeypatch.setattr(implicit, "implicit_accuracy", fake)
    return calls


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--scorer-path", "pickscore=/nowhere"], "--scorer-path"),
        (["--scorer-dtype", "float16"], "--scorer-dtype"),
        (["--tune-on", "toy:pairs:2"], "--tune-on"),
        (["--threshold", "0.1"], "--threshold"),
    ],
)
def test_model_mode_refuses_scorer_options(tmp_path, capsys, implicit_calls, extra, named):
    argv = ["eval", "accuracy", "--data", "toy:pairs", "--model", str(tmp_path), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{named} only applies with --scorer NAME" in err
    assert "loads no reward scorer" in err
    assert implicit_calls == []  # refused before anything ran


def test_model_mode_still_runs_with_its_own_options(tmp_path, capsys, implicit_calls):
    argv = ["eval", "accuracy", "--data", "toy:pairs", "--model", str(tmp_path)]
    assert main(argv) == 0, capsys.readouterr().err
    assert main([*argv, "--draws", "2", "--base", str(tmp_path)]) == 0
    assert [c["draws"] for c in implicit_calls] == [4, 2]  # the default, then the option
    assert implicit_calls[1]["base"] == str(tmp_path)


@pytest.mark.parametrize(
    ("extra", "named"), [(["--base", "toy:sd"], "--base"), (["--draws", "2"], "--draws")]
)
def test_scorer_mode_refuses_model_options(capsys, extra, named):
    argv = ["eval", "accuracy", "--data", "toy:pairs", "--scorer", "toy:fidelity", *extra]
    assert main(argv) == 2
    assert f"{named} only applies with --model RUN" in capsys.readouterr().err


# ---------------------------------------------------------------- eval flaws: what the CI is


def test_flaws_output_names_every_interval(tmp_path, capsys):
    from mmalign.eval.flaw_area import flaw_report
    from mmalign.toy.flaws import inject_flaws
    from mmalign.toy.render import render_batch
    from mmalign.toy.world import sample_prompts

    prompts = sample_prompts(8, "heldout", seed=0)
    clean = render_batch(prompts, 32)
    flawed, _ = inject_flaws(clean, seed=1)
    fake_eval(tmp_path / "a", prompts, clean, clean)
    fake_eval(tmp_path / "b", prompts, clean, flawed)
    out = tmp_path / "flaws.json"
    assert main(["eval", "flaws", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                 str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1].startswith("results: ")  # --out
    lines = printed[:-1]
    report = flaw_report([tmp_path / "a", tmp_path / "b"])
    b = report["runs"][str(tmp_path / "b")]
    t, c = b["tuned_area"], b["area_change"]
    run_b = next(line for line in lines if line.startswith(f"{tmp_path / 'b'}:"))
    # each interval labelled, areas in percent, their change in percentage points
    assert f"tuned {t['mean']:.2%} (95% CI {t['ci95'][0]:.2%}-{t['ci95'][1]:.2%})" in run_b
    assert (
        f"change tuned - base {100 * c['mean']:+.2f} pp (95% CI {100 * c['ci95'][0]:+.2f} to "
        f"{100 * c['ci95'][1]:+.2f} pp), paired by prompt and seed"
    ) in run_b
    assert "tuned plausibility" in run_b and "8 prompts, 8 images" in run_b
    d = report["tuned_area_difference"]
    paired = next(line for line in lines if line.startswith(d["of"]))
    assert f"tuned flawed area {100 * d['mean']:+.2f} pp (95% CI" in paired
    assert all("(95% CI" in line for line in lines[:-1])  # no bare interval left
    # what the interval is: said once, and kept in the JSON
    assert lines[-1].startswith("each 95% CI (ci95) is a percentile bootstrap of the mean over")
    assert "2000 resamples of the prompts" in lines[-1]
    assert json.loads(out.read_text())["interval"] == lines[-1]


# the run record's tied pairs and toy build counts: tests/test_review7_run_record.py
