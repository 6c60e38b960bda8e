"""Review 4: a hub base model is fingerprinted by the snapshot it was loaded from.

`fingerprint` gave None for a hub id, so `mmalign eval winrate --base org/model` kept reusing
the images it saved for the base (and for a LoRA or run tuned on it) after the hub's `main`
moved to a new revision and the cache was updated: the saved images were keyed by the name
alone. The fingerprint of a hub id is now the commit of the cached snapshot `refs/main` points
at (huggingface_hub's `models--org--name/snapshots/<commit>` layout).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mmalign.diffusion import tiny_sd_pipeline
from mmalign.eval.winrate import fingerprint, run_winrate

OLD, NEW = "a" * 40, "b" * 40
REPO = "org/pipe"


def _fake_cache(root: Path) -> Path:
    """A hub cache holding two snapshots of org/pipe, refs/main at the old one."""
    repo = root / "models--org--pipe"
    for commit in (OLD, NEW):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "model_index.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(OLD)
    return repo / "refs" / "main"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return _fake_cache(tmp_path / "hub")


def test_the_fingerprint_follows_refs_main(cache):
    from mmalign.weights import hub_commit

    assert hub_commit(REPO) == OLD
    first = fingerprint(REPO)
    assert first is not None
    cache.write_text(NEW)  # the hub's main moved and the cache was updated
    assert hub_commit(REPO) == NEW
    assert fingerprint(REPO) not in (None, first)
    assert hub_commit(REPO, revision=OLD) == OLD  # a commit asked for by its hash


def test_what_is_not_a_cached_hub_id_has_none(cache, tmp_path):
    from mmalign.weights import hub_commit

    assert hub_commit("org/not-cached") is None and fingerprint("org/not-cached") is None
    assert fingerprint("toy:sd") is None and fingerprint(None) is None
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "w.safetensors").write_bytes(b"x")
    assert fingerprint(str(tmp_path / "run")) is not None  # a local folder: its files


def test_winrate_draws_the_base_again_when_its_revision_changes(cache, capsys):
    pipes = tiny_sd_pipeline(seed=0), tiny_sd_pipeline(seed=1)
    for p in pipes:
        p.set_progress_bar_config(disable=True)
    out = cache.parents[3] / "eval"
    kw = {"steps": 1, "guidance": 2.0, "batch_size": 2, "report": False,
          "meta": {"base": REPO, "tuned": str(out / "no-such-lora")}}  # fmt: skip
    prompts = ["a red circle on a blue background"]
    run_winrate(*pipes, prompts, ["toy:fidelity"], out, **kw)
    again = run_winrate(*pipes, prompts, ["toy:fidelity"], out, **kw)
    assert again["images_generated"] == 0  # same revision: reused
    cache.write_text(NEW)
    moved = run_winrate(*pipes, prompts, ["toy:fidelity"], out, **kw)
    # the base, and the tuned model sitting on it, are drawn again
    assert moved["images_generated"] == 2
    assert "generated with other settings (base_weights)" in capsys.readouterr().out
