"""`--debug` is taken where it stands as a flag, anywhere on the line; where it is an option's
value or comes after `--`, it is left for argparse, which reads it as the parser would."""

from __future__ import annotations

import pytest

from mmalign.cli import build_parser, main
from mmalign.cli_errors import debug_requested


@pytest.fixture(scope="module")
def parser():
    return build_parser()


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("MMALIGN_DEBUG", raising=False)


@pytest.mark.parametrize(
    "argv",
    [
        ["--debug", "train", "c.yaml"],
        ["train", "c.yaml", "--debug", "train.max_steps=2"],  # between two overrides
        ["sample", "toy:sd", "--prompt", "p", "--debug"],
        ["sample", "toy:sd", "--out=g.png", "--debug", "--prompt", "p"],  # value given with =
        ["sample", "toy:sd", "--seed", "-1", "--debug", "--prompt", "p"],
        ["eval", "winrate", "--tuned", "t", "--debug", "--out", "o"],
    ],
)
def test_a_flag_anywhere_is_taken(parser, argv):
    debug, rest = debug_requested(argv, parser)
    assert debug and rest == [a for a in argv if a != "--debug"]


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "toy:sd", "--prompt", "--debug", "cat"],  # --prompt's value
        ["sample", "toy:sd", "--out", "--debug", "--prompt", "p"],
        ["sample", "toy:sd", "--pro", "--debug"],  # an abbreviation argparse expands
        ["sample", "--prompt", "p", "--", "--debug"],  # after --: a positional (the model)
        ["train", "--", "c.yaml", "--debug"],
        ["invert", "toy:sd", "--average", "1", "--debug"],  # the second of --average's two
    ],
)
def test_an_option_value_or_a_token_after_double_dash_stays(parser, argv):
    debug, rest = debug_requested(argv, parser)
    assert not debug and rest == argv


def test_the_cli_parser_reads_a_value_as_a_value(parser):
    argv = ["sample", "toy:sd", "--prompt", "--debug", "cat"]
    assert debug_requested(argv, parser) == (False, argv)
    assert debug_requested(["train", "c.yaml", "--debug"], parser) == (True, ["train", "c.yaml"])


def test_the_environment_still_turns_it_on(parser, monkeypatch):
    monkeypatch.setenv("MMALIGN_DEBUG", "1")
    assert debug_requested(["train", "c.yaml"], parser) == (True, ["train", "c.yaml"])


def test_main_reads_a_value_after_double_dash(tmp_path, capsys):
    """`mmalign train -- --debug`: a recipe file named `--debug`, not a missing CONFIG."""
    assert main(["train", "--", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "config file not found: --debug" in err and "required" not in err


def test_main_reports_a_missing_option_value(capsys):
    """`--prompt --debug`: argparse's own answer (the value is missing), not a prompt taken
    from the next token."""
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "toy:sd", "--prompt", "--debug", "--out", "g.png"])
    assert exit_info.value.code == 2
    assert "argument --prompt: expected one argument" in capsys.readouterr().err
