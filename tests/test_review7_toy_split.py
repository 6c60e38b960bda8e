"""`--split` given for toy data (built, not split) was silently ignored by `mmalign data smooth`,
`data show` (of a toy card) and `data diagnose`: the command read the built rows whatever split
it named, and `data show` even printed `data.split=test`. It is refused now, naming the option,
before any data is built or model loaded, through the one helper `toy.cache.split_to_read`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from device_helpers import Stop, recorder

from mmalign.cli import main
from mmalign.config import InputError
from mmalign.toy.cache import split_to_read


def test_split_to_read_refuses_a_split_for_toy_data_and_defaults_otherwise():
    with pytest.raises(InputError, match=r"--split test: toy data is built, not split"):
        split_to_read("toy:pairs", "test")
    with pytest.raises(InputError, match=r"mmalign toy data vqa --set prompt_split=heldout"):
        split_to_read("toy:vqa:1", "validation")  # a seeded spec names its kind
    with pytest.raises(InputError, match=r"not split .*\. toy:flaws:heldout: the held-out"):
        split_to_read("toy:flaws", "test", hint="toy:flaws:heldout: the held-out prompts")
    assert split_to_read("toy:pairs", None) == "train"  # not given: the built rows
    assert split_to_read("some/folder", None) == "train"
    assert split_to_read("some/folder", "test") == "test"
    assert split_to_read("some/folder", None, "validation") == "validation"


def _refused(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "--split test: toy data is built, not split" in err
    return err


def test_data_smooth_refuses_a_split_for_toy_data(tmp_path: Path, monkeypatch, capsys):
    import mmalign.diffusion.data

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.diffusion.data, "open_pairs", recorder(calls))
    argv = ["data", "smooth", "toy:pairs", "--scorer", "toy:fidelity", "--out",
            str(tmp_path / "o")]  # fmt: skip
    _refused([*argv, "--split", "test"], capsys)
    assert calls == []  # nothing opened, so nothing built
    with pytest.raises(Stop):  # without --split it reads the built rows, as before
        main(argv)
    assert calls[0]["args"][:2] == ("toy:pairs", "train")


def test_data_show_refuses_a_split_for_a_toy_card(monkeypatch, capsys):
    import mmalign.data_cli

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.data_cli, "_open", recorder(calls))
    _refused(["data", "show", "toy_pairs", "--split", "test"], capsys)
    assert calls == []


def test_data_diagnose_refuses_a_split_for_toy_data(tmp_path: Path, monkeypatch, capsys):
    import mmalign.vlm.load

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mmalign.vlm.load, "load_vlm", recorder(calls))
    out = str(tmp_path / "d")
    _refused(["data", "diagnose", "toy:vqa", "--model", "toy:vlm", "--out", out,
              "--split", "test"], capsys)  # fmt: skip
    assert calls == []  # refused before the model loads
