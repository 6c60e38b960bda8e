"""PPD's user-embedding cache is keyed on the prompt format: a change to how the encoder's
few-shot conversation is built or tokenized (the one-BOS fix was one) bumps
`PROMPT_FORMAT_VERSION`, and embeddings cached under another version, or under none (caches
written before the version existed), are computed again instead of served stale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from mmalign.data.cache import digest
from mmalign.data.schema import load_pairs
from mmalign.toy.datasets import build_dataset
from mmalign.vlm import user_embed
from mmalign.vlm.load import VLM, load_vlm
from mmalign.vlm.user_embed import (
    Example,
    _image_digest,
    cache_key,
    cached_user_embeddings,
    examples_from_pairs,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Example]], VLM]:
    root = tmp_path_factory.mktemp("ppd_version")
    # the smallest `users` set the builder makes: 2 pairs for each of its 128 users
    build_dataset("users", root / "data", n=256, seed=0, users="train", progress=False)
    examples, _ = examples_from_pairs(load_pairs(root / "data" / "pairs"))
    some = {u: examples[u][:2] for u in list(examples)[:2]}
    return root, some, load_vlm("toy:vlm")


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the encoder's runs: a cache hit never calls `embed_users`."""
    calls: list[int] = []
    real = user_embed.embed_users

    def counted(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(user_embed, "embed_users", counted)
    return calls


def test_a_new_prompt_format_version_recomputes(world, tmp_path, monkeypatch) -> None:
    _, some, vlm = world
    calls = _counting(monkeypatch)
    first, hit1 = cached_user_embeddings(vlm, some, shots=2, cache_dir=tmp_path)
    _, hit2 = cached_user_embeddings(vlm, some, shots=2, cache_dir=tmp_path)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    # the encoder's prompt changes (here: other wording) and the version is bumped with it;
    # `raising=False` so that, without the versioned key, this fails on the stale hit below
    monkeypatch.setattr(
        user_embed,
        "PROMPT_FORMAT_VERSION",
        getattr(user_embed, "PROMPT_FORMAT_VERSION", 0) + 1,
        raising=False,
    )
    real = user_embed.few_shot_conversation

    def reworded(examples: Any) -> tuple[list[dict[str, Any]], list[Any]]:
        messages, images = real(examples)
        messages[0]["content"][-1]["text"] = "which images would this user choose?"
        return messages, images

    monkeypatch.setattr(user_embed, "few_shot_conversation", reworded)
    fresh, hit3 = cached_user_embeddings(vlm, some, shots=2, cache_dir=tmp_path)
    assert not hit3 and len(calls) == 2, "a stale embedding of the old prompt format was reused"
    assert (fresh["t00"] - first["t00"]).abs().max() > 1e-4  # the new prompt's, not the old
    _, hit4 = cached_user_embeddings(vlm, some, shots=2, cache_dir=tmp_path)
    assert hit4 and len(calls) == 2  # the new version's entry is cached in its turn
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_caches_from_before_the_version_are_not_reused(world, tmp_path, monkeypatch) -> None:
    """An entry under the key of the code before versioning, and one under the current key
    but without the version recorded in it, both hold stale (here: zero) embeddings."""
    _, some, vlm = world
    calls = _counting(monkeypatch)
    used = {u: [(p, _image_digest(a), _image_digest(b)) for p, a, b in e] for u, e in some.items()}
    old_key = digest({"weights": vlm.weights_key, "shots": 2, "layer": -2, "pooling": "mean",
                      "examples": used})  # fmt: skip
    stale = {u: torch.zeros(128) for u in some}
    save_file(stale, str(tmp_path / f"{old_key}.safetensors"))
    embs, hit = cached_user_embeddings(vlm, some, shots=2, cache_dir=tmp_path)
    assert not hit and len(calls) == 1 and embs["t00"].abs().max() > 0

    unversioned = tmp_path / "unversioned"
    unversioned.mkdir()
    save_file(stale, str(unversioned / f"{cache_key(vlm, some, 2, -2, 'mean')}.safetensors"))
    embs, hit = cached_user_embeddings(vlm, some, shots=2, cache_dir=unversioned)
    assert not hit and len(calls) == 2 and embs["t00"].abs().max() > 0
    # the recomputed entry replaced the unversioned one and is served from now on
    again, hit = cached_user_embeddings(vlm, some, shots=2, cache_dir=unversioned)
    assert hit and len(calls) == 2 and torch.equal(again["t00"], embs["t00"])


def test_the_version_is_recorded_beside_the_embeddings(world, monkeypatch) -> None:
    from mmalign.cli import main

    root, _, _ = world
    monkeypatch.setenv("MMALIGN_CACHE", str(root / "cache"))
    out = root / "embedded"
    args = ["data", "user-embed", str(root / "data"), "--shots", "1", "--out", str(out)]
    assert main(args) == 0
    info = json.loads((out / "user_embeddings.json").read_text())
    assert info["prompt_format"] == user_embed.PROMPT_FORMAT_VERSION


def test_a_ppd_run_records_the_version_of_its_embeddings(world, tmp_path, monkeypatch) -> None:
    """Computed embeddings name the current version; given ones keep what their JSON says,
    None where it says nothing (written before the version existed)."""
    from types import SimpleNamespace

    from mmalign.diffusion.ppd_recipe import training_embeddings
    from mmalign.vlm.user_embed import write_embeddings

    root, _, _ = world
    monkeypatch.setattr(user_embed, "cache_root", lambda: tmp_path / "cache")
    rows = load_pairs(root / "data" / "pairs").select(range(4))
    ppd = SimpleNamespace(encoder="toy:vlm", shots=1, layer=-2, pooling="mean", batch_size=4,
                          embeddings=None)  # fmt: skip
    embs, info = training_embeddings(SimpleNamespace(ppd=ppd), rows)
    assert info["prompt_format"] == user_embed.PROMPT_FORMAT_VERSION and info["cached"] is False
    write_embeddings(embs, tmp_path / "old", {"model": "toy:vlm", "shots": 1})
    ppd.embeddings = str(tmp_path / "old")
    _, info = training_embeddings(SimpleNamespace(ppd=ppd), rows)
    assert info["prompt_format"] is None
