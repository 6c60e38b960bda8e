"""The precomputed VLM reference's cache file is written whole (then renamed), and a file cut
short (a run killed mid-write by an older version) is scored again rather than crashing every
later run with a JSON error."""

from __future__ import annotations

from pathlib import Path

from test_vlm_review_precomputed_autocast import recipe, step_zero


def _cache_files(root: Path) -> list[Path]:
    return sorted((root / "vlm-reference").glob("*.json"))


def test_a_cut_reference_cache_is_scored_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    _, ref = step_zero(recipe(tmp_path / "a", "no"))
    (cached,) = _cache_files(tmp_path / "cache")
    assert not list(cached.parent.glob("*.part"))  # nothing left beside it
    whole = cached.read_text()
    cached.write_text(whole[: len(whole) // 2])  # cut short
    _, again_ref = step_zero(recipe(tmp_path / "b", "no"))
    assert (again_ref == ref).all()
    assert cached.read_text() == whole  # written again, whole
