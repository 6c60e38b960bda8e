"""BPO's first row check measured a data answer with its end-of-turn token (review 8).

The rows are checked before their blind answers are generated (no generate for a row skipped
anyway), then with them. A data answer with the text of a blind answer cut by
`vlm.blind_max_new_tokens` is scored open, without the end-of-turn token, once the blind answers
are known (`blind.open_or_capped`); the first check did not know which ones and measured every
answer closed. A row right at `vlm.max_length` with its answer open was skipped there by that
token and got no blind answer, though the final check keeps it. The first check now measures a
row too long as it stands again with its answers open (`fitting.OpenBound`): a lower bound, so
it skips only rows the final check would skip too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from datasets import load_from_disk
from test_review7_vlm_rows import BPO, _recipe, _rows

from mmalign.vlm import blind
from mmalign.vlm.collate import PairCollator
from mmalign.vlm.fitting import OpenBound

ROW = 2  # the row whose rejected answer is a capped blind answer's text
CAPPED = " ".join(["word"] * 30)


@pytest.fixture
def data(tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    # a prompt no other row asks (the stub below answers by prompt)
    edit = {"prompt": "Tell me the secret code written in this image.", "rejected": CAPPED}
    return _rows(tmp_path / "rows", {ROW: edit})


def _lengths(data: str) -> tuple[int, int]:
    """ROW's longest sequence (its rejected answer) closed, and with CAPPED open."""
    from mmalign.vlm.load import VLMRef

    row = load_from_disk(data)[ROW]
    processor = VLMRef("toy:vlm").processor
    closed = PairCollator(processor, ["main"]).lengths(row)
    opened = PairCollator(processor, ["main"], open_end=lambda a: a == CAPPED).lengths(row)
    return closed, opened


def _kept(recipe: Any) -> set[int]:
    """The rows the recipe trains on (no row was dropped by validation: opened = source)."""
    return {i for i, _ in recipe.dataset.index}


def _blind(data: str, capped: bool, monkeypatch) -> list[list[str]]:
    """Blind answers stubbed: CAPPED (cut by the cap where `capped`) for ROW's prompt, "no"
    (ended) for the others; the prompts of each generation recorded."""
    prompt = load_from_disk(data)[ROW]["prompt"]
    seen: list[list[str]] = []

    def stub(model: Any, processor: Any, given: list[str], **kw: Any) -> blind.BlindAnswers:
        seen.append(list(given))
        mine = [p == prompt for p in given]
        return blind.BlindAnswers([CAPPED if m else "no" for m in mine],
                                  [capped and m for m in mine])  # fmt: skip

    monkeypatch.setattr(blind, "blind_responses", stub)
    return seen


def test_a_row_at_max_length_with_a_capped_answer_text_is_kept(tmp_path: Path, data,
                                                               monkeypatch, capsys):  # fmt: skip
    closed, opened = _lengths(data)
    assert closed > opened  # the end-of-turn token: the boundary this test sits on
    seen = _blind(data, True, monkeypatch)
    recipe = _recipe(tmp_path, data, BPO, max_length=opened)
    prompt = load_from_disk(data)[ROW]["prompt"]
    assert prompt in seen[0]  # generated for (was skipped by the first check: no blind answer)
    assert "too_long" not in recipe.report.skipped
    assert ROW in _kept(recipe)
    assert "skipped" not in capsys.readouterr().out


def test_one_token_over_is_still_skipped(tmp_path: Path, data, monkeypatch):
    _, opened = _lengths(data)
    _blind(data, True, monkeypatch)
    recipe = _recipe(tmp_path, data, BPO, max_length=opened - 1)
    assert recipe.report.examples["too_long"] == [ROW]
    assert ROW not in _kept(recipe)


def test_an_answer_no_capped_blind_answer_shares_is_measured_closed(tmp_path: Path, data,
                                                                    monkeypatch):  # fmt: skip
    """The blind answer ended: CAPPED is scored closed, and the row, one token over, is skipped
    by the final check (the first one let it through to be generated for)."""
    _, opened = _lengths(data)
    seen = _blind(data, False, monkeypatch)
    recipe = _recipe(tmp_path, data, BPO, max_length=opened)
    assert load_from_disk(data)[ROW]["prompt"] in seen[0]
    assert recipe.report.examples["too_long"] == [ROW]


def test_open_bound_fits_a_row_only_its_open_answers_fit(data):
    from mmalign.vlm.load import VLMRef

    closed, opened = _lengths(data)
    row = load_from_disk(data)[ROW]
    processor = VLMRef("toy:vlm").processor
    assert OpenBound(processor, ["main"], opened).fits(row)
    assert not PairCollator(processor, ["main"], opened).fits(row)  # as the first check was
    assert not OpenBound(processor, ["main"], opened - 1).fits(row)
    assert OpenBound(processor, ["main"], closed).fits(row)


def test_the_open_bound_closes_only_the_answers_that_cannot_end_open(monkeypatch):
    """An answer the template changes cannot end open (the final check measures it closed):
    the bound measures it closed and still opens the row's other answers; before, the whole
    row counted as too long (review 8)."""
    from mmalign.vlm.chat_format import ChatFormat
    from mmalign.vlm.collate import RowError
    from mmalign.vlm.load import VLMRef

    found = ChatFormat.answer_end
    monkeypatch.setattr(ChatFormat, "answer_end", staticmethod(
        lambda completion, answer, frame: None if answer == "changed" else found(
            completion, answer, frame)))  # fmt: skip
    chat = ChatFormat(VLMRef("toy:vlm").processor, open_end=lambda answer: True)
    with pytest.raises(RowError, match="changed the open-ended answer"):
        chat.render("What?", 1, ["kept open", "changed"])
    chat.open_where_possible = True
    done = chat.render("What?", 1, ["kept open", "changed"]).completions
    closed = ChatFormat(VLMRef("toy:vlm").processor).render("What?", 1, ["changed"])
    assert done["changed"] == closed.completions["changed"]  # measured as it will be
    assert done["kept open"] == " kept open"  # no end-of-turn: open
    assert OpenBound(VLMRef("toy:vlm").processor, ["main"], 8).opened.format.open_where_possible
