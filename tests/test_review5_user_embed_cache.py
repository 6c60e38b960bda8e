"""The user-embedding cache (`cached_user_embeddings`), shared between users and writers:

- an entry is written with the permissions a plainly created file gets (the umask's), not
  `tempfile.mkstemp`'s 0600, which `os.replace` kept: another Unix user of a shared cache could
  not read it;
- a hit is read without any lock, so a read-only cache folder serves its entries (PPD training
  took one global `$MMALIGN_CACHE/user_embed.lock` even on a hit);
- a miss is computed under the entry's own lock by every caller (`mmalign data user-embed` and
  ppd_users' toy embeddings took none), once: the second caller reads the first one's entry."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from mmalign.vlm import user_embed

EMBS = {"u0": torch.arange(4.0), "u1": torch.ones(4)}


@pytest.fixture
def one_entry(monkeypatch) -> list[str]:
    """Every call is of the entry `entry`; returns the names of the threads that computed."""
    computed: list[str] = []

    def embed(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        computed.append(threading.current_thread().name)
        return dict(EMBS)

    monkeypatch.setattr(user_embed, "_check", lambda *a, **k: None)
    monkeypatch.setattr(user_embed, "cache_key", lambda *a, **k: "entry")
    monkeypatch.setattr(user_embed, "embed_users", embed)
    return computed


def _cached(folder: Path) -> tuple[dict[str, torch.Tensor], bool]:
    return user_embed.cached_user_embeddings(None, {}, cache_dir=folder)  # type: ignore[arg-type]


def test_an_entry_gets_the_permissions_of_a_plainly_created_file(tmp_path, one_entry):
    old = os.umask(0o022)
    try:
        _cached(tmp_path / "cache")
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "cache" / "entry.safetensors").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o644  # was 0o600


def test_a_hit_in_a_read_only_cache_folder_is_served(tmp_path, monkeypatch, one_entry):
    """Through PPD training, which took `$MMALIGN_CACHE/user_embed.lock` before reading."""
    from types import SimpleNamespace

    from mmalign.diffusion import ppd_recipe

    root = tmp_path / "cache"
    monkeypatch.setattr("mmalign.data.cache.cache_root", lambda: root)
    monkeypatch.setattr(user_embed, "cache_root", lambda: root)
    _cached(root / "user_embed")
    assert one_entry
    one_entry.clear()
    monkeypatch.setattr("mmalign.vlm.load.load_vlm", lambda *a, **k: object())
    monkeypatch.setattr(user_embed, "examples_from_pairs", lambda rows: ({"u0": []}, 0))
    cfg = SimpleNamespace(
        ppd=SimpleNamespace(encoder="toy:vlm", shots=1, layer=-2, pooling="mean",
                            embeddings=None, batch_size=8),
    )  # fmt: skip
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    folders = [root, root / "user_embed"]
    for folder in folders:
        folder.chmod(0o555)
    try:
        embs, info = ppd_recipe.training_embeddings(cfg, [])
        hit, _ = _cached(root / "user_embed")  # and `data user-embed`, ppd_users' toy users
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert info["cached"] is True and one_entry == []
    assert all(torch.equal(embs[u], EMBS[u]) and torch.equal(hit[u], EMBS[u]) for u in EMBS)
    if os.geteuid() == 0:  # root writes anyway: the read-only folder proves nothing, so check
        # that a hit left nothing behind (no lock file: the read took no lock)
        assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_a_miss_is_computed_once_under_the_entrys_lock(tmp_path, one_entry, monkeypatch):
    """Two callers at once (e.g. `data user-embed` beside a run); unlocked, both computed."""
    both = threading.Barrier(2, timeout=1.0)
    embed = user_embed.embed_users

    def meet_then_embed(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        try:
            both.wait()  # both computing at once, where nothing stops them
        except threading.BrokenBarrierError:
            pass
        return embed(*args, **kwargs)

    monkeypatch.setattr(user_embed, "embed_users", meet_then_embed)
    results: list[tuple[dict[str, torch.Tensor], bool]] = []
    threads = [
        threading.Thread(target=lambda: results.append(_cached(tmp_path)), name=f"writer{i}")
        for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(one_entry) == 1 and sorted(hit for _, hit in results) == [False, True]
    assert all(torch.equal(r[u], EMBS[u]) for r, _ in results for u in EMBS)
    assert (tmp_path / "entry.lock").is_file()  # the entry's own lock, beside it
