"""`TESTED_FAMILIES` was never read: a model family no test covers loaded without a word.
`load_vlm` now warns once per family outside it, naming the family and the tested ones;
toy-vlm and the tiny test models (LLaVA, Qwen2-VL) load quietly."""

from __future__ import annotations

import warnings

import pytest

from mmalign.vlm import load
from mmalign.vlm.load import load_vlm
from mmalign.vlm.tiny import tiny_qwen2vl


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(load, "_WARNED", set())


def _loads_quietly(name: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_vlm(name)
    assert not [w for w in caught if "not one mmalign is tested on" in str(w.message)]


def test_toy_and_tiny_models_load_quietly(tmp_path):
    _loads_quietly("toy:vlm")
    tiny_qwen2vl(tmp_path / "qwen")
    _loads_quietly(str(tmp_path / "qwen"))


def test_an_untested_family_warns_once(monkeypatch):
    monkeypatch.setattr(load, "TESTED_FAMILIES", ("qwen2_vl", "idefics3"))  # llava left out
    with pytest.warns(UserWarning, match=r"family 'llava' is not one .*qwen2_vl, idefics3"):
        load_vlm("toy:vlm")
    _loads_quietly("toy:vlm")  # once per family
