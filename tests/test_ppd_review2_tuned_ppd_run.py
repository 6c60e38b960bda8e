"""A PPD run given where a tuned model goes (`mmalign sample RUN`, `eval winrate --tuned RUN`
without `--user`): a clear error pointing at `--ppd` / `--user`, not "... is neither a
pipeline, a LoRA, a UNet folder nor a training run" (about the run's adapter file)."""

from __future__ import annotations

import json

import pytest

from mmalign.cli import main
from mmalign.config import InputError
from mmalign.diffusion import ppd, tiny_sd_pipeline
from mmalign.diffusion.tuned import load_tuned


@pytest.fixture
def ppd_run(tmp_path):
    run = tmp_path / "run"
    pipe = tiny_sd_pipeline()
    branch = tiny_sd_pipeline()
    ppd.add_user_branch(branch.unet, 8)
    path = ppd.save_adapter(branch.unet, run)
    base = tmp_path / "base"
    pipe.save_pretrained(base)  # eval winrate loads the base before the tuned model
    final = {"kind": "ppd", "path": str(path)}
    (run / "mmalign_run.json").write_text(json.dumps({"base": str(base), "final": final}))
    return run


def test_load_tuned_names_the_ppd_commands(ppd_run):
    with pytest.raises(InputError, match=r"is a PPD run.*--ppd .*--user ID.*--user IDS"):
        load_tuned(ppd_run)


@pytest.mark.parametrize("command", ["sample", "winrate"])
def test_cli_refuses_a_ppd_run_as_a_tuned_model(ppd_run, tmp_path, capsys, command):
    argv = {
        "sample": ["sample", str(ppd_run), "--prompt", "a red circle", "--out",
                   str(tmp_path / "grid.png")],
        "winrate": ["eval", "winrate", "--tuned", str(ppd_run), "--scorers", "toy:fidelity",
                    "--out", str(tmp_path / "wr")],
    }[command]  # fmt: skip
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "is a PPD run" in err and "--ppd" in err and "neither a pipeline" not in err
