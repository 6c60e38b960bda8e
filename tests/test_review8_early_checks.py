"""Review 8: newcomer mistakes answered late, or with a hint the user cannot type back.

- `mmalign train ... train.resume_from=latst` built the toy data and loaded the model (seconds
  to minutes) before refusing the value; it is now refused with the other early checks.
- `data.path=toy:pair` suggested `'pairs'` (not a valid data.path) after toy-sd had loaded;
  the suggestion now carries the `toy:` prefix and comes before any loading.
- `mmalign eval winrate --base ID` offline said "set model to a local folder" for a `--base`.
- `mmalign config show configs/toy/dpo.yml` (for dpo.yaml) said only "config file not found".
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli_errors import offline  # noqa: F401  (autouse: offline, an empty hub cache)

from mmalign.cli import main

ROOT = Path(__file__).resolve().parents[1]
DPO = str(ROOT / "configs" / "toy" / "dpo.yaml")


@pytest.fixture
def no_loading(monkeypatch):
    """`mmalign train` fails the test if it reaches the loop (data building, model loading)."""
    import mmalign.train.loop as loop

    def reached(*args, **kwargs):
        raise AssertionError("the training loop started: the input was not checked early")

    monkeypatch.setattr(loop, "train", reached)


def _train_error(capsys, tmp_path: Path, *overrides: str) -> str:
    argv = ["train", DPO, f"output_dir={tmp_path / 'out'}", *overrides]
    assert main(argv) == 2
    return capsys.readouterr().err


def test_bad_resume_from_is_refused_before_loading(tmp_path, capsys, no_loading) -> None:
    err = _train_error(capsys, tmp_path, "train.resume_from=latst")
    assert "train.resume_from: latst is not an mmalign checkpoint folder" in err
    assert "did you mean 'latest'?" in err
    run = tmp_path / "run"
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    err = _train_error(capsys, tmp_path, f"train.resume_from={run}")
    assert "it is a run's output_dir: give `latest`" in err


def test_good_resume_from_passes_the_early_check(tmp_path) -> None:
    from mmalign.config import load_config
    from mmalign.train import Config
    from mmalign.train.sources import resume_problem

    ckpt = tmp_path / "run" / "checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text('{"step": 2}\n')
    for value in ("latest", str(ckpt)):
        cfg = load_config(Config, DPO, [f"train.resume_from={value}"])
        assert resume_problem(cfg) is None


def test_mistyped_toy_kind_suggests_it_with_the_prefix(tmp_path, capsys, no_loading) -> None:
    err = _train_error(capsys, tmp_path, "data.path=toy:pair")
    assert "data.path: unknown toy dataset 'toy:pair'; did you mean 'toy:pairs'?" in err
    err = _train_error(capsys, tmp_path, "data.path=toy:zzzzzz")
    assert "valid: toy:pairs, toy:style" in err
    # the builder's own check words it the same way
    from mmalign.toy.cache import toy_pairs

    with pytest.raises(ValueError, match=r"did you mean 'toy:style'\?"):
        toy_pairs("stlye", {})


def test_eval_winrate_names_the_base_flag(tmp_path, capsys) -> None:
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    argv = ["eval", "winrate", "--tuned", str(tuned), "--base", "org/uncached",
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--base: org/uncached is not in the local cache (offline)" in err
    assert "or set --base to a local folder" in err
    assert "set model to" not in err


def test_config_with_the_other_yaml_extension_is_suggested(tmp_path, capsys) -> None:
    (tmp_path / "dpo.yaml").write_text("model:\n  name_or_path: toy:sd\n")
    (tmp_path / "mapo.yml").write_text("model:\n  name_or_path: toy:sd\n")
    for given, meant in (("dpo.yml", "dpo.yaml"), ("mapo.yaml", "mapo.yml")):
        assert main(["config", "show", str(tmp_path / given)]) == 2
        err = capsys.readouterr().err
        assert f"config file not found: {tmp_path / given}; " in err
        assert f"did you mean '{tmp_path / meant}'?" in err
    assert main(["config", "show", str(tmp_path / "zzzzzzzzzz.yaml")]) == 2
    assert "did you mean" not in capsys.readouterr().err
