"""An option a command does not have is reported under that command's usage, with the option
it probably meant; for the commands that take recipe overrides, `--max-steps 2` is answered
with the `key=value` spelling (`train.max_steps=2`)."""

from __future__ import annotations

import pytest

from mmalign.cli import main


def _usage_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_flag_for_a_recipe_key(capsys) -> None:
    err = _usage_error(["train", "configs/toy/dpo.yaml", "--max-steps", "2"], capsys)
    assert "usage: mmalign train" in err
    assert "unrecognized arguments: --max-steps 2" in err
    assert "did you mean 'train.max_steps=2'?" in err


def test_flag_for_a_nested_recipe_key(capsys) -> None:
    err = _usage_error(["config", "show", "configs/toy/dpo.yaml", "--random-flp"], capsys)
    assert "usage: mmalign config show" in err
    assert "did you mean 'diffusion.random_flip=VALUE'?" in err


def test_flag_with_no_close_key(capsys) -> None:
    err = _usage_error(["train", "configs/toy/dpo.yaml", "--lr", "1e-4"], capsys)
    assert "usage: mmalign train" in err
    assert "recipe settings are key=value overrides" in err


def test_misspelled_option(capsys) -> None:
    argv = ["eval", "winrate", "--tuned", "x", "--out", "y", "--scorrers", "pickscore"]
    err = _usage_error(argv, capsys)
    assert "usage: mmalign eval winrate" in err
    assert "unrecognized arguments: --scorrers pickscore" in err
    assert "did you mean '--scorers'?" in err


def test_stray_positional_keeps_argparse_message(capsys) -> None:
    err = _usage_error(["losses", "extra"], capsys)
    assert "usage: mmalign losses" in err and "unrecognized arguments: extra" in err
