"""Two writers of one user-embedding cache entry at once (`mmalign data user-embed` beside a
training run): both finish and the entry is whole. Writers now take the entry's own lock (one
computes, the other reads its entry); one that does not (an older mmalign, or a file system
whose locks do not hold) still writes through a temporary file of its own: with one shared
temporary name the second rename found the file gone."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

import torch

from mmalign.vlm import user_embed

EMBS = {"u0": torch.arange(4.0), "u1": torch.ones(4)}


def _two_writers(tmp_path) -> list[BaseException]:
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
    return errors


def _entry_is_whole(tmp_path) -> None:
    # no temporary file left (the entry's lock may stay: it is reused)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == [
        "entry.safetensors"
    ]
    read, hit = user_embed.cached_user_embeddings(None, {}, cache_dir=tmp_path)  # type: ignore[arg-type]
    assert hit and all(torch.equal(read[u], EMBS[u]) for u in EMBS)


def _one_entry(monkeypatch) -> None:
    monkeypatch.setattr(user_embed, "_check", lambda *a, **k: None)
    monkeypatch.setattr(user_embed, "cache_key", lambda *a, **k: "entry")
    monkeypatch.setattr(user_embed, "embed_users", lambda *a, **k: dict(EMBS))


def test_two_writers_of_one_entry_both_finish(tmp_path, monkeypatch):
    _one_entry(monkeypatch)
    assert _two_writers(tmp_path) == []
    _entry_is_whole(tmp_path)


def test_two_writers_without_the_lock_both_finish(tmp_path, monkeypatch):
    _one_entry(monkeypatch)
    monkeypatch.setattr("filelock.FileLock", lambda *a, **k: contextlib.nullcontext())
    real_replace = os.replace
    both_written = threading.Barrier(2, timeout=30)

    def wait_then_replace(src: Any, dst: Any) -> None:
        both_written.wait()  # both temporary files written before either is renamed
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", wait_then_replace)
    assert _two_writers(tmp_path) == []
    monkeypatch.setattr(os, "replace", real_replace)
    _entry_is_whole(tmp_path)
