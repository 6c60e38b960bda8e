"""The `mmalign` command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmalign.cli import main
from mmalign.losses import LOSSES

ROOT = Path(__file__).resolve().parents[1]


def test_losses_lists_every_registered_loss(capsys):
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    for name in LOSSES:
        assert f"\n{name} " in out
    assert "15 losses registered" in out


def test_config_show_prints_the_resolved_config(capsys):
    code = main(["config", "show", str(ROOT / "configs/sd15/dpo_lora.yaml"), "train.seed=7"])
    assert code == 0
    out = capsys.readouterr().out
    assert "seed: 7" in out and "Objective(1*dpo(main" in out


def test_config_error_exits_2_and_names_the_key(capsys):
    code = main(["config", "show", str(ROOT / "configs/sd15/dpo_lora.yaml"), "train.sed=7"])
    assert code == 2
    assert "did you mean 'train.seed'" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["losses"], ["config"], ["config", "show"], ["demo"]])
def test_every_command_has_help(command):
    result = subprocess.run(
        [sys.executable, "-m", "mmalign.cli", *command, "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: mmalign" in result.stdout


def test_every_subcommand_formats_its_help():
    """`mmalign ... --help` of every (sub)command: argparse %-formats each help string, so a
    bare '%' (as in "95% bootstrap") crashed `mmalign eval --help` with a ValueError."""
    import argparse

    from mmalign.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        assert "usage: mmalign" in parser.format_help(), path
        seen = [path]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    seen += walk(child, (*path, name))
        return seen

    paths = walk(build_parser(), ())
    assert ("eval", "flaws") in paths and len(paths) > 20
