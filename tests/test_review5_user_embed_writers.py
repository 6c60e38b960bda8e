"""Two writers of one user-embedding cache entry at once (`mmalign data user-embed` beside a
training run): each writes through a temporary file of its own, so both finish and the entry
is whole. With one shared temporary name the second rename found the file gone."""

from __future__ import annotations

import threading
from typing import Any

import torch

from mmalign.vlm import user_embed


def test_two_writers_of_one_entry_both_finish(tmp_path, monkeypatch):
    monkeypatch.setattr(user_embed, "_check", lambda *a, **k: None)
    monkeypatch.setattr(user_embed, "cache_key", lambda *a, **k: "entry")
    embs = {"u0": torch.arange(4.0), "u1": torch.ones(4)}
    monkeypatch.setattr(user_embed, "embed_users", lambda *a, **k: dict(embs))
    real_save = __import__("safetensors.torch", fromlist=["save_file"]).save_file
    both_saved = threading.Barrier(2, timeout=30)

    def save_then_wait(tensors: Any, filename: str, metadata: Any = None) -> None:
        real_save(tensors, filename, metadata=metadata)
        both_saved.wait()  # both temporary files written before either is renamed

    monkeypatch.setattr("safetensors.torch.save_file", save_then_wait)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            user_embed.cached_user_embeddings(None, {}, cache_dir=tmp_path)  # type: ignore[arg-type]
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["entry.safetensors"]  # no leftovers
    read, hit = user_embed.cached_user_embeddings(None, {}, cache_dir=tmp_path)  # type: ignore[arg-type]
    assert hit and all(torch.equal(read[u], embs[u]) for u in embs)
