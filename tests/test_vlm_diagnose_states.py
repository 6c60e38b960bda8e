"""Cached CHES states (mmalign/vlm/diagnose_states.py): `data diagnose` writes
DIR/states.safetensors and reuses it with `--states` or from the cache with no model pass, and
states that do not fit the model (another hidden size, other weights, other pairs, a damaged
file) are an InputError naming the file and both hidden sizes."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from datasets import Dataset
from test_vlm_diagnose import no_forward
from vlm_helpers import pair_rows

from mmalign.cli import main
from mmalign.config import InputError
from mmalign.vlm.diagnose import diagnose_rows, pair_key
from mmalign.vlm.diagnose_states import (
    STATES_FILE,
    PairStates,
    StatesKey,
    load_states,
    save_states,
)
from mmalign.vlm.load import load_vlm
from mmalign.vlm.tiny import tiny_llava


def saved_pairs(tmp_path, n: int = 4):
    a, b = pair_rows()
    rows = [a, b, {**a, "rejected": "green circle"}, {**b, "rejected": "maybe not"}][:n]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "data"))
    return str(tmp_path / "data")


def diagnose(data: str, out, *extra: str, model: str = "toy:vlm") -> int:
    return main(["data", "diagnose", data, "--model", model, "--out", str(out), *extra])


def test_the_guard_sees_a_model_pass():
    """no_forward() is what the other tests rely on: it must stop an uncached diagnosis."""
    vlm = load_vlm("toy:vlm")
    with no_forward() as calls, pytest.raises(RuntimeError, match="where none may run"):
        diagnose_rows(vlm.model, vlm.processor, pair_rows(), progress=False)
    assert calls


def test_cli_writes_states_and_reuses_them_without_a_model_pass(tmp_path, capsys):
    data = saved_pairs(tmp_path)
    assert diagnose(data, tmp_path / "first", "--batch-size", "3") == 0
    states = load_states(tmp_path / "first" / STATES_FILE, "test")
    table = pd.read_parquet(tmp_path / "first" / "pairs.parquet")
    hidden = load_vlm("toy:vlm").core.get_output_embeddings().weight.shape[-1]
    assert len(states) == len(table) == 4 and states.hidden_size == hidden
    assert states.tensors["chosen_sum"].shape == (4, hidden)
    assert states.tensors["chosen_sum"].dtype == torch.float64
    assert states.tensors["row"].tolist() == list(table["row"])
    assert states.tensors["chosen_tokens"].tolist() == list(table["chosen_tokens"])
    assert states.meta["hidden_size"] == str(hidden) and "toy-vlm" in states.meta["model_name"]
    assert not states.has_reference
    capsys.readouterr()

    # --states: the earlier run's file, no forward; the table is the same, the filter works
    with no_forward() as calls:
        code = diagnose(data, tmp_path / "again", "--states",
                        str(tmp_path / "first" / STATES_FILE),
                        "--filter", "ln_ches:keep_lowest=0.5")  # fmt: skip
    assert code == 0 and calls == []
    assert "from --states" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "again" / "pairs.parquet"), table)
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert summary["filter"]["kept"] == 2 and (tmp_path / "again" / STATES_FILE).is_file()

    # no --states: the cache entry the first run stored, no forward either
    with no_forward() as calls:
        assert diagnose(data, tmp_path / "cached") == 0
    assert calls == [] and "from the cache" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cached" / "pairs.parquet"), table)


def test_states_of_another_hidden_size_are_an_input_error(tmp_path, capsys):
    """Issue 24: a model whose hidden size does not match the states is a clear error naming
    both sizes and the file (toy-vlm's states, D = 128, given with a tiny LLaVA, D = 32)."""
    data = saved_pairs(tmp_path)
    assert diagnose(data, tmp_path / "toy") == 0
    tiny_llava(tmp_path / "llava")
    llava = tmp_path / "llava"
    capsys.readouterr()
    path = tmp_path / "toy" / STATES_FILE
    code = diagnose(data, tmp_path / "llava-diag", "--states", str(path), model=str(llava))
    err = capsys.readouterr().err
    assert code == 2
    assert f"--states {path}" in err and "hidden size 128" in err and "hidden size 32" in err
    assert "toy-vlm" in err  # which model the states came from
    assert not (tmp_path / "llava-diag" / "pairs.parquet").exists()


def test_a_damaged_cache_entry_is_an_input_error_naming_both_sizes(tmp_path, monkeypatch):
    # its own cache: the damaged entry must not reach the session's shared one, where a later
    # test diagnosing the same pairs would read it
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    vlm = load_vlm("toy:vlm")
    rows = pair_rows()
    diagnose_rows(vlm.model, vlm.processor, rows, model_key=vlm.weights_key, progress=False)
    path = StatesKey.of(vlm.weights_key, [pair_key(r) for r in rows], vlm.processor).path()
    good = load_states(path, "test")
    sums = {k: torch.cat([v, v[:, :1]], 1) for k, v in good.tensors.items() if "sum" in k}
    save_states(path, PairStates({**good.tensors, **sums}, {**good.meta, "hidden_size": "129"}))
    with pytest.raises(InputError) as err:
        diagnose_rows(vlm.model, vlm.processor, rows, model_key=vlm.weights_key, progress=False)
    message = str(err.value)
    assert f"cached CHES states {path}" in message and "delete the file" in message
    assert "hidden size 129" in message and "hidden size 128" in message
    # written atomically: nothing but whole entries in the cache folder
    assert {p.suffix for p in path.parent.iterdir()} == {".safetensors"}


def test_states_of_other_pairs_weights_or_no_reference_are_refused(tmp_path, capsys):
    data = saved_pairs(tmp_path)
    assert diagnose(data, tmp_path / "first") == 0
    path = tmp_path / "first" / STATES_FILE
    capsys.readouterr()
    # other pairs: two of the four rows
    assert diagnose(data, tmp_path / "fewer", "--states", str(path), "--max-samples", "2") == 2
    assert "cover other pairs (4 of them)" in capsys.readouterr().err
    # the same hidden size but other weights
    states = load_states(path, "test")
    other = tmp_path / "other.safetensors"
    save_states(other, PairStates(states.tensors, {**states.meta, "model": "0" * 16,
                                                   "model_name": "elsewhere"}))  # fmt: skip
    assert diagnose(data, tmp_path / "other", "--states", str(other)) == 2
    assert "computed by elsewhere, not by" in capsys.readouterr().err
    # implicit accuracy needs reference log-probs the file does not hold
    vlm = load_vlm("toy:vlm")
    with pytest.raises(InputError, match="no reference log-probs"):
        diagnose_rows(vlm.model, vlm.processor, Dataset.load_from_disk(data), states=path,
                      with_reference=True, progress=False)  # fmt: skip


def test_a_missing_or_foreign_states_file_is_an_input_error(tmp_path, capsys):
    data = saved_pairs(tmp_path, 2)
    assert diagnose(data, tmp_path / "x", "--states", str(tmp_path / "none.safetensors")) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not safetensors")
    assert diagnose(data, tmp_path / "x", "--states", str(junk)) == 2
    assert f"--states {junk}: not a readable states file" in capsys.readouterr().err
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(foreign))
    assert diagnose(data, tmp_path / "x", "--states", str(foreign)) == 2
    assert "not an mmalign CHES states file" in capsys.readouterr().err
