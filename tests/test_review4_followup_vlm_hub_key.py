"""A hub VLM's cache key (`VLM.weights_key`) follows the commit its revision names in the cache.

The key of a hub id held its name and the revision as given: a branch or tag (`revision: main`,
`v1.0`) kept one key after the hub moved it and the cache was updated, so the reference
scores, CHES states, user embeddings and PRISM searches cached for the old weights were served
for the new ones. The key now holds the commit of the cached snapshot that revision names
(`weights.hub_commit`), as the win-rate cache keys a hub base.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmalign.vlm.load import load_vlm, weights_key

OLD, NEW = "a" * 40, "b" * 40
REPO = "org/vlm"


@pytest.fixture
def refs_main(tmp_path, monkeypatch) -> Path:
    """An offline hub cache holding two snapshots of org/vlm (toy-vlm's files), main at OLD."""
    from huggingface_hub import constants

    from mmalign.toy.paths import model_path

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    repo = hub / "models--org--vlm"
    for commit in (OLD, NEW):
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for file in Path(model_path("vlm")).iterdir():
            os.symlink(file, snapshot / file.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(OLD)
    return repo / "refs" / "main"


def test_the_key_of_a_branch_follows_its_cached_commit(refs_main):
    first = weights_key(REPO, "main", None)
    assert OLD in first
    refs_main.write_text(NEW)  # the hub's main moved and the cache was updated
    moved = weights_key(REPO, "main", None)
    assert NEW in moved and moved != first
    assert weights_key(REPO, OLD, None) != moved  # a commit asked for by its hash: that one


def test_a_loaded_hub_vlm_is_keyed_by_the_commit_of_its_revision(refs_main):
    first = load_vlm(REPO, revision="main").weights_key
    assert load_vlm(REPO, revision="main").weights_key == first  # the same snapshot: one key
    refs_main.write_text(NEW)
    moved = load_vlm(REPO, revision="main").weights_key
    assert moved != first
    unpinned = load_vlm(REPO).weights_key  # no revision: main's commit too
    assert NEW in unpinned


def test_a_local_folder_has_no_commit(tmp_path):
    from mmalign.toy.paths import model_path

    folder = str(model_path("vlm"))
    key = weights_key(folder, None, None)
    assert ("model.safetensors",) == tuple(f[0] for f in key[key.index(folder) + 2])  # its files
    assert len(key) == 5  # no commit slot: the key saved searches and caches recorded
