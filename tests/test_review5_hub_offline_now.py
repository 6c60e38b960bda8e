"""mmalign's own hub lookups follow HF_HUB_OFFLINE and the cache folder as they are when the
call is made. huggingface_hub reads both once, at import: set later (a notebook, a test), it
contacted the hub anyway and retried a dead connection for about 23 s before giving up."""

from __future__ import annotations

import huggingface_hub
import pytest

from mmalign.diffusion.flow_load import process_of
from mmalign.rewards.common import resolve_file


@pytest.fixture
def calls(tmp_path, monkeypatch):
    seen: list[dict] = []

    def download(repo_id, filename, **kwargs):
        seen.append({"repo_id": repo_id, "filename": filename, **kwargs})
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return seen


def test_a_model_index_lookup_stays_local_when_offline_is_set_after_import(calls, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert process_of("org/uncached") is None
    assert calls and all(c["local_files_only"] is True for c in calls)
    assert {str(c["cache_dir"]) for c in calls} == {str(calls[0]["cache_dir"])}
    assert str(calls[0]["cache_dir"]).endswith("hub")


def test_online_the_lookup_may_download(calls, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    process_of("org/uncached")
    assert calls and calls[0]["local_files_only"] is False


def test_a_scorer_checkpoint_download_uses_the_cache_named_now(calls, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    from mmalign import hub

    # online with a hub that answers (the scorer's up-front check probes it once)
    monkeypatch.setattr(hub, "_REACHABLE", {})
    monkeypatch.setattr(hub, "_probe", lambda endpoint, timeout: True)
    with pytest.raises(Exception):  # noqa: B017 (the download above raises; its wrapping is not the point)
        resolve_file("org/scorer", "model.safetensors")
    assert calls and str(calls[0]["cache_dir"]) == str(tmp_path / "hub")
