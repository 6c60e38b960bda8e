"""PPD's user encoder (Dang et al. CVPR 2025) on toy-vlm: batched, cached, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from mmalign.cli import main
from mmalign.config import InputError
from mmalign.data.schema import load_pairs
from mmalign.toy.datasets import build_dataset
from mmalign.vlm.load import load_vlm
from mmalign.vlm.user_embed import cached_user_embeddings, embed_users, examples_from_pairs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppd")
    build_dataset("users", root / "data", n=32, seed=0, users="train", progress=False)
    examples, ties = examples_from_pairs(load_pairs(root / "data" / "pairs"))
    return root, examples, ties, load_vlm("toy:vlm")


def test_one_embedding_per_user_batched_and_distinct(world) -> None:
    _, examples, ties, vlm = world
    assert ties == 0 and len(examples) == 16
    some = dict(list(examples.items())[:5])
    a = embed_users(vlm, some, shots=2, batch_size=5)
    b = embed_users(vlm, some, shots=2, batch_size=1)
    assert set(a) == set(some) and a["t00"].shape == (128,)
    for u in some:
        torch.testing.assert_close(a[u], b[u], atol=1e-4, rtol=1e-4)  # batching changes nothing
    assert (a["t00"] - a["t01"]).abs().max() > 1e-3  # different examples, different users
    last = embed_users(vlm, {"t00": some["t00"]}, shots=2, pooling="last")
    assert (last["t00"] - a["t00"]).abs().max() > 1e-3


def test_cached_and_reused_keyed_by_examples(world, tmp_path) -> None:
    _, examples, _, vlm = world
    some = dict(list(examples.items())[:3])
    first, hit1 = cached_user_embeddings(vlm, some, shots=2, cache_dir=tmp_path)
    again, hit2 = cached_user_embeddings(vlm, some, shots=2, cache_dir=tmp_path)
    assert (hit1, hit2) == (False, True)
    assert all(torch.equal(first[u], again[u]) for u in some)
    swapped = {u: list(reversed(e)) for u, e in some.items()}  # other examples: not the cache
    _, hit3 = cached_user_embeddings(vlm, swapped, shots=2, cache_dir=tmp_path)
    _, hit4 = cached_user_embeddings(vlm, some, shots=2, layer=-1, cache_dir=tmp_path)
    assert (hit3, hit4) == (False, False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3


def test_too_few_examples_is_a_clear_error(world) -> None:
    _, examples, _, vlm = world
    with pytest.raises(InputError, match=r"fewer than --shots 3 examples: t00 \(2\)"):
        embed_users(vlm, {"t00": examples["t00"][:2]}, shots=3)
    with pytest.raises(InputError, match="pooling"):
        embed_users(vlm, examples, pooling="max")


def test_cli_writes_embeddings_beside_the_data(world, monkeypatch, capsys) -> None:
    root, _, _, _ = world
    monkeypatch.setenv("MMALIGN_CACHE", str(root / "cache"))
    assert main(["data", "user-embed", str(root / "data"), "--shots", "2", "--layer", "-1"]) == 0
    info = json.loads((root / "data" / "user_embeddings" / "user_embeddings.json").read_text())
    assert info["layer"] == -1 and info["pooling"] == "mean" and info["shots"] == 2
    assert info["width"] == 128 and len(info["users"]) == 16 and info["cached"] is False
    assert main(["data", "user-embed", str(root / "data"), "--shots", "3"]) == 2
    assert "fewer than --shots 3" in capsys.readouterr().err
