"""Review 8: plausible command-line mistakes that were answered with a misleading line.

- A mistyped toy model (`mmalign sample toy:sdd`, `model.name_or_path=toy:vlmm`) was "does not
  exist (no such local folder or file)", with no word of the toy names.
- `mmalign eval accuracy --data DIR` with neither `--scorer` nor `--model` said "..., not both".
- `mmalign eval accuracy --data MISSING_DIR` said "use pickapic:<split> or toy:<kind>[:seed]",
  neither naming the missing folder nor a dataset folder as an option; a missing `--tune-on`
  was called `--data`.
"""

from __future__ import annotations

import argparse

import pytest

from mmalign.config import InputError
from mmalign.eval.accuracy import load_pairs, validation_spec
from mmalign.hub import Need, problem, require_one


@pytest.mark.parametrize(
    ("name", "guess"), [("toy:sdd", "toy:sd"), ("toy:vlmm", "toy:vlm"), ("toy:flwo", "toy:flow")]
)
def test_mistyped_toy_model_suggests_the_toy_name(name: str, guess: str) -> None:
    message = problem(Need(name, "model"))
    assert message == f"model: no toy model {name!r}; did you mean {guess!r}?"
    with pytest.raises(InputError, match="did you mean"):
        require_one(name, "model.name_or_path")


def test_known_toy_names_are_not_called_typos() -> None:
    for name in ("toy:sd", "toy:flow", "toy:vlm", "toy:dense"):
        assert "no toy model" not in str(problem(Need(name, "model")))


def _accuracy_args(**kw: object) -> argparse.Namespace:
    base = {"data": "x", "scorer": None, "model": None, "base": None, "draws": None,
            "split": "train", "tune_on": None, "threshold": None, "max_rows": None,
            "batch_size": 32, "out": None, "scorer_path": [], "scorer_device": "auto",
            "scorer_dtype": None, "pickapic_root": None}  # fmt: skip
    base.update(kw)
    return argparse.Namespace(**base)


def test_eval_accuracy_without_scorer_or_model() -> None:
    from mmalign.eval.cli import _cmd_eval_accuracy

    with pytest.raises(ValueError, match="one of them") as neither:
        _cmd_eval_accuracy(_accuracy_args())
    assert "not both" not in str(neither.value)
    with pytest.raises(ValueError, match="not both"):
        _cmd_eval_accuracy(_accuracy_args(scorer="toy:fidelity", model="runs/x"))


def test_eval_accuracy_missing_folder_is_named(tmp_path) -> None:
    missing = str(tmp_path / "pairs" / "pair")
    with pytest.raises(ValueError) as tuned:
        validation_spec(missing)
    with pytest.raises(ValueError) as loaded:
        load_pairs(missing, split="train")
    for err in (tuned.value, loaded.value):
        assert str(err).startswith(f"--data {missing!r}: no such dataset folder")
        assert "saved pair dataset folder" in str(err)
    with pytest.raises(ValueError, match=r"^--tune-on 'nope': no such dataset folder"):
        load_pairs("nope", flag="--tune-on")


def test_resume_from_mistakes_get_a_hint(tmp_path, monkeypatch) -> None:
    """`train.resume_from=latst` and `train.resume_from=RUN` (the run, not a checkpoint of it)
    said only "is not an mmalign checkpoint folder"."""
    from mmalign.train.checkpoint import resolve_resume

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"latst is not an .*; did you mean 'latest'\?$"):
        resolve_resume(tmp_path, "latst")
    run = tmp_path / "run"
    (run / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="it is a run's output_dir: give `latest`"):
        resolve_resume(tmp_path, str(run))
    with pytest.raises(FileNotFoundError, match=r"give `latest` \(the newest in output_dir\)"):
        resolve_resume(tmp_path, str(tmp_path / "elsewhere"))
