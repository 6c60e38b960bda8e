"""Evaluation prompt sets: Pick-a-Pic unique splits from a local v2 Parquet folder, PartiPrompts,
the HPS v2 benchmark, toy prompts and text files."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from mmalign.data.pickapic import PICKAPIC_SCHEMA, write_pickapic
from mmalign.data.prompts import resolve_prompts


def pickapic_rows(captions):
    return [
        {"prompt": c, "chosen": torch.full((3, 8, 8), 0.9), "rejected": torch.full((3, 8, 8), 0.1)}
        for c in captions
    ]


def test_pickapic_test_unique_reads_a_local_v2_parquet_folder(tmp_path, monkeypatch):
    captions = ["a cat", "a dog", "a cat", "a red fox", "a dog", "a bird"]
    paths = write_pickapic(pickapic_rows(captions), tmp_path / "pp", "test_unique", shard_size=4)
    assert len(paths) == 2 and pq.read_table(paths[0]).schema.equals(PICKAPIC_SCHEMA)
    expected = ["a cat", "a dog", "a red fox", "a bird"]  # unique, first-occurrence order
    assert resolve_prompts("pickapic:test_unique", pickapic_root=tmp_path / "pp") == expected
    monkeypatch.setenv("MMALIGN_PICKAPIC", str(tmp_path / "pp"))
    assert resolve_prompts("pickapic:test_unique") == expected
    with pytest.raises(ValueError, match="available splits: \\['test_unique'\\]"):
        resolve_prompts("pickapic:validation_unique")
    with pytest.raises(ValueError, match="name the split"):
        resolve_prompts("pickapic:")


def test_parti_hps_toy_and_text_files(tmp_path):
    tsv = tmp_path / "PartiPrompts.tsv"
    tsv.write_text(
        "Prompt\tCategory\tChallenge\tNote\na tree\tPlants\tBasic\t\nan owl\tAnimals\tBasic\t\n"
    )
    assert resolve_prompts(f"parti:{tsv}") == ["a tree", "an owl"]
    hps = tmp_path / "hps"
    hps.mkdir()
    (hps / "anime.json").write_text(json.dumps(["an anime girl", "a castle"]))
    (hps / "photo.json").write_text(json.dumps(["a photo of a lake"]))
    assert resolve_prompts(f"hps:{hps}") == ["an anime girl", "a castle", "a photo of a lake"]
    assert resolve_prompts(f"hps:{hps / 'photo.json'}") == ["a photo of a lake"]
    (tmp_path / "bad.tsv").write_text("text\nx\n")
    with pytest.raises(ValueError, match="'Prompt' column"):
        resolve_prompts(f"parti:{tmp_path / 'bad.tsv'}")
    with pytest.raises(FileNotFoundError, match=r"missing\.tsv"):
        resolve_prompts(f"parti:{tmp_path / 'missing.tsv'}")
    assert len(resolve_prompts("toy:heldout:5")) == 5
    txt = tmp_path / "p.txt"
    txt.write_text("one\n\ntwo\n")
    assert resolve_prompts(str(txt)) == ["one", "two"]
    with pytest.raises(FileNotFoundError, match="pickapic:<split>"):
        resolve_prompts("nope.txt")
