"""A toy builder's model named `toy:sd` / `toy:flow` (as `mmalign sample toy:sd --ppd RUN --user
h00` or `eval winrate --base toy:sd` pass it to build a held-out user's examples) is the shipped
model's folder: the cache key reads its weights, and the builder gets a folder it can load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mmalign.toy.datasets as toy_datasets
from mmalign.toy.cache import toy_data_folder, toy_pairs
from mmalign.toy.paths import model_path

OPTIONS = {"n": 2, "users": "heldout", "candidates": "model-layouts", "steps": 2}


@pytest.mark.parametrize("name", ["sd", "flow"])
def test_a_toy_model_name_keys_like_its_folder(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path))
    folder = str(model_path(name))
    assert toy_data_folder("users", OPTIONS, f"toy:{name}") == toy_data_folder(
        "users", OPTIONS, folder
    )
    as_option = {**OPTIONS, "model": f"toy:{name}"}
    assert toy_data_folder("users", as_option) == toy_data_folder("users", OPTIONS, folder)


def test_the_builder_gets_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path))
    seen: dict[str, Any] = {}

    def fake_build(kind: str, out: Path, **options: Any) -> None:
        seen.update(options)
        Path(out, "pairs").mkdir(parents=True)
        Path(out, "summary.json").write_text("{}")

    monkeypatch.setattr(toy_datasets, "build_dataset", fake_build)
    toy_pairs("users", OPTIONS, "toy:sd")
    assert seen["model"] == str(model_path("sd"))
    assert Path(seen["model"], "model_index.json").is_file()
