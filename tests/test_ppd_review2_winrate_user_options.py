"""`mmalign eval winrate --tuned RUN --user IDS` scores one image per prompt with each user's own
reward: `--seeds-per-prompt N` and `--scorers` would be dropped silently (a run asked for 4
images per prompt reported n = the prompt count), so they are refused, naming the option."""

from __future__ import annotations

import pytest

from mmalign.cli import main

COMMON = ["eval", "winrate", "--tuned", "no-such-run", "--user", "h00", "--out", "unused"]


@pytest.mark.parametrize(
    ("extra", "named"),
    [(["--seeds-per-prompt", "4"], "--seeds-per-prompt 4"),
     (["--scorers", "pickscore"], "--scorers pickscore")],
)  # fmt: skip
def test_options_the_user_path_ignores_are_refused(capsys, extra, named) -> None:
    assert main([*COMMON, *extra]) == 2
    err = capsys.readouterr().err
    assert "eval winrate --user does not take" in err and named in err


def test_the_defaults_pass_the_check(capsys) -> None:
    # with the defaults the command goes on (and stops at the missing run, not at the check)
    assert main([*COMMON, "--seeds-per-prompt", "1", "--scorers", "toy:fidelity"]) == 2
    err = capsys.readouterr().err
    assert "does not take" not in err and "no-such-run" in err
