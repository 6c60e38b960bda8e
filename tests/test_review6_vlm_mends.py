"""Mends from a review of the session's VLM changes: a RowError raised in a DataLoader worker
reaches the main process as itself (it could not be unpickled), and `evaluating` switches only
the modules in training mode, every call, restoring them after."""

from __future__ import annotations

import pickle

import torch

from mmalign.vlm.chat_format import RowError
from mmalign.vlm.dropout import evaluating


def test_row_error_survives_pickling() -> None:
    err = RowError("missing_blind", "pair 'blind' needs the column 'blind'", row=7)
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, RowError)
    assert (back.reason, back.detail, back.row, str(back)) == (
        err.reason, err.detail, err.row, str(err),
    )  # fmt: skip


def test_evaluating_switches_and_restores_each_call() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5), torch.nn.Linear(2, 2))
    model.train()
    model[2].eval()  # a module kept in eval mode stays there
    for _ in range(3):  # the module list is kept between calls
        with evaluating(model):
            assert not any(m.training for m in model.modules())
            x = torch.ones(4, 2)
            assert torch.equal(model(x), model(x))  # no dropout sampled
        assert [m.training for m in model.modules()] == [True, True, True, False]


def test_diagnose_skips_a_pre_templated_row_as_training_does() -> None:
    """`mmalign data diagnose` crashed on one pre-templated prompt (a RowError out of the
    collator) where training skips and counts it."""
    from vlm_helpers import pair_rows

    from mmalign.vlm.diagnose import diagnose_rows
    from mmalign.vlm.load import load_vlm

    vlm = load_vlm("toy:vlm")
    a, b = pair_rows()
    templated = {**a, "prompt": "USER: <image>\nWhat is shown? ASSISTANT:"}
    for max_length in (None, 4096):
        diag = diagnose_rows(vlm.model, vlm.processor, [b, templated, b], progress=False,
                             max_length=max_length)  # fmt: skip
        assert diag.columns["row"] == [0, 2]
        assert diag.report.skipped == {"pretemplated_prompt": 1}
        assert diag.report.examples["pretemplated_prompt"] == [1]


def test_strict_raises_for_a_placeholder_mismatch_found_by_validation(tmp_path, monkeypatch):
    """Since the data's validation counts `<image>` placeholder mismatches, `vlm.strict: true`
    no longer raised for them (the docs and the behaviour before: a row error naming it)."""
    import pytest
    from datasets import load_from_disk
    from test_vlm_train import _Accel, vlm_config

    from mmalign.toy.cache import toy_pairs
    from mmalign.vlm.recipe import VLMRecipe

    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    src = load_from_disk(str(toy_pairs("hallucination", {"n": 16})))

    def edit(row, i):
        if i == 3:
            row["prompt"] = "<image> <image> " + row["prompt"]
        return row

    src.map(edit, with_indices=True, features=src.features).save_to_disk(str(tmp_path / "rows"))
    data = {"path": str(tmp_path / "rows"), "split": "train", "toy": None}
    train = {"batch_size": 4, "max_steps": 1}
    lax = VLMRecipe(vlm_config(tmp_path / "a", data=data, vlm={}, train=train), _Accel())
    assert lax.report.skipped == {"image_placeholder_mismatch": 1}
    strict = vlm_config(tmp_path / "b", data=data, vlm={"strict": True}, train=train)
    with pytest.raises(RowError, match=r"^row 3: .*placeholders"):
        VLMRecipe(strict, _Accel())
