"""Review 9: with no local Pick-a-Pic and no hub, `mmalign eval accuracy --data pickapic:<split>`
said "Pick-a-Pic (a local folder or $MMALIGN_PICKAPIC): ... or set Pick-a-Pic (a local folder or
$MMALIGN_PICKAPIC) to a local folder": no option to set. It now names the command's
`--pickapic-root` and `$MMALIGN_PICKAPIC`, whichever gave the source, or both for the hub."""

from __future__ import annotations

import re

import pytest
from test_cli_errors import offline  # noqa: F401  (autouse: offline, an empty hub cache)

from mmalign.cli import main
from mmalign.config import InputError
from mmalign.data.prompts import resolve_prompts

HUB = "yuvalkirstain/pickapic_v2"
BOTH = "--pickapic-root (or $MMALIGN_PICKAPIC)"


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err[err.index("mmalign: ") :].strip()


ACCURACY = ["eval", "accuracy", "--data", "pickapic:test", "--scorer", "toy:fidelity"]


def test_eval_accuracy_names_the_option_and_the_variable(tmp_path, capsys, monkeypatch):
    message = _error(ACCURACY, capsys)
    assert message.startswith(f"mmalign: error: {BOTH}: {HUB} is not in the local cache"), message
    assert message.endswith(f"or set {BOTH} to a local folder")
    missing = tmp_path / "none"
    message = _error([*ACCURACY, "--pickapic-root", str(missing)], capsys)
    assert f"--pickapic-root: {missing} does not exist" in message
    monkeypatch.setenv("MMALIGN_PICKAPIC", str(missing))
    assert f"$MMALIGN_PICKAPIC: {missing} does not exist" in _error(ACCURACY, capsys)


def test_prompts_name_the_flag_a_command_has(tmp_path):
    with pytest.raises(InputError, match="^" + re.escape(f"{BOTH}: {HUB} is not in the local")):
        resolve_prompts("pickapic:test_unique", pickapic_flag="--pickapic-root")
    with pytest.raises(InputError) as err:  # a recipe's validation.prompts: no option to name
        resolve_prompts("pickapic:test_unique")
    assert str(err.value).startswith(f"$MMALIGN_PICKAPIC: {HUB} is not in the local cache")
    assert "--pickapic-root" not in str(err.value)


def test_eval_winrate_names_what_gave_the_folder(tmp_path, capsys):
    (tmp_path / "tuned").mkdir()
    winrate = ["eval", "winrate", "--tuned", str(tmp_path / "tuned"), "--base", "toy:sd",
               "--prompts", "pickapic:test_unique", "--out", str(tmp_path / "o")]  # fmt: skip
    message = _error([*winrate, "--pickapic-root", str(tmp_path / "none")], capsys)
    assert f"--pickapic-root: {tmp_path / 'none'} does not exist" in message
    message = _error(winrate, capsys)
    assert f"{HUB} is not in the local cache" in message and "$MMALIGN_PICKAPIC" in message
    assert "Pick-a-Pic (a local folder" not in message


def test_pickapic_key():
    from mmalign.data.prompts import pickapic_key

    assert pickapic_key("/data/pp", "--pickapic-root") == "--pickapic-root"
    assert pickapic_key("/data/pp") == "--pickapic-root"  # a root is given by that option
    assert pickapic_key(None, "--pickapic-root") == BOTH
    assert pickapic_key(None) == "$MMALIGN_PICKAPIC"
