"""Names on the command line: empty entries in `--scorers`, a long list of valid names cut to
a readable length, `toy:` accepted by `toy build`, and a dataset card with a key given twice."""

from __future__ import annotations

import pytest

from mmalign.cli import main
from mmalign.suggest import MAX_LISTED, did_you_mean


def test_a_long_list_of_valid_names_is_cut(capsys) -> None:
    names = [f"user{i:03d}" for i in range(180)]
    message = did_you_mean("zzzzzz", names)
    assert message.endswith("... (180 in all)") and message.count(",") == MAX_LISTED
    assert did_you_mean("zzzzzz", ["a", "b"]) == "valid: a, b"  # a short list stays whole


@pytest.mark.parametrize("scorers", ["", ",", " , "])
def test_no_scorer_named_is_one_line(tmp_path, capsys, scorers) -> None:
    code = main(["eval", "winrate", "--tuned", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--scorers", scorers])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "name at least one scorer" in err and err.count("\n") == 1


def test_a_trailing_comma_in_scorers_is_no_scorer(tmp_path, capsys) -> None:
    code = main(["eval", "winrate", "--tuned", str(tmp_path / "none"), "--out",
                 str(tmp_path / "o"), "--scorers", "toy:fidelity,"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "unknown scorer" not in err and "does not exist" in err


def test_toy_build_takes_the_toy_prefix(capsys) -> None:
    assert main(["toy", "build", "toy:sdd"]) == 2
    assert "did you mean 'sd'?" in capsys.readouterr().err


def test_a_card_with_a_key_twice_is_refused(tmp_path, monkeypatch) -> None:
    from mmalign.config import ConfigError
    from mmalign.data.cards import load_card

    card = tmp_path / "twice.yaml"
    card.write_text("name: twice\nreader: pairs\nname: again\n")
    with pytest.raises(ConfigError, match=r"line 3.*'name' is given twice"):
        load_card(card)
