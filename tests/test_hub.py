"""mmalign/hub.py against fake hub caches built under tmp_path: what is cached, what is missing
offline, what does not exist locally, and how load failures are worded."""

from __future__ import annotations

import httpx
import pytest
from huggingface_hub import errors as hub_errors_module

from mmalign.config import InputError
from mmalign.hub import Need, hub_error_message, hub_errors, is_cached, problem, require

SHA = "0123456789abcdef0123456789abcdef01234567"


def fake_repo(cache, repo_id, files, repo_type="model"):
    """The layout huggingface_hub writes: refs/main -> snapshots/<sha>/<files>."""
    folder = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(SHA)
    for name in files:
        path = folder / "snapshots" / SHA / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def test_a_cached_pipeline_passes_and_a_partial_one_does_not(cache):
    fake_repo(cache, "org/pipe", ["model_index.json", "unet/config.json"])
    fake_repo(cache, "org/vae-only-readme", ["README.md"])
    assert is_cached(Need("org/pipe", "model", file="model_index.json"))
    assert problem(Need("org/pipe", "model", file="model_index.json")) is None
    assert not is_cached(Need("org/vae-only-readme", "model.vae", file="config.json"))
    assert is_cached(Need("org/vae-only-readme", "model.vae"))  # no marker file: any snapshot


def test_offline_misses_are_named_together_with_how_to_get_them(cache):
    fake_repo(cache, "org/pipe", ["model_index.json"])
    needs = [
        Need("org/pipe", "model.name_or_path", file="model_index.json"),
        Need("madebyollin/sdxl-vae-fp16-fix", "model.vae", file="config.json"),
        Need("yuvalkirstain/pickapic_v2", "data.path", repo_type="dataset"),
    ]
    with pytest.raises(InputError) as info:
        require(needs)
    lines = str(info.value).splitlines()
    assert len(lines) == 2  # the cached pipeline is not among them
    assert lines[0] == (
        "model.vae: madebyollin/sdxl-vae-fp16-fix is not in the local cache (offline): "
        "download it with `hf download madebyollin/sdxl-vae-fp16-fix` where there is network, "
        "or set model.vae to a local folder"
    )
    assert "`hf download yuvalkirstain/pickapic_v2 --repo-type dataset`" in lines[1]
    assert lines[1].startswith("data.path: yuvalkirstain/pickapic_v2")


def test_a_cached_dataset_in_either_cache_passes(cache, tmp_path, monkeypatch):
    fake_repo(cache, "org/pairs", ["data/train-00000.parquet"], repo_type="dataset")
    assert problem(Need("org/pairs", "data.path", repo_type="dataset")) is None
    prepared = tmp_path / "prepared"
    (prepared / "org___other").mkdir(parents=True)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(prepared))
    assert problem(Need("org/other", "data.path", repo_type="dataset")) is None
    assert problem(Need("org/third", "data.path", repo_type="dataset")) is not None


def test_online_an_uncached_id_is_left_to_the_loader(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert problem(Need("org/not-cached", "model")) is None


def test_a_missing_local_folder_is_named_as_such(cache, tmp_path):
    for name in (str(tmp_path / "missing"), "./runs/missing", "~/no/such/folder", "a/b/c"):
        message = problem(Need(name, "model.name_or_path"))
        assert (
            message == f"model.name_or_path: {name} does not exist (no such local folder or file)"
        )
    existing = tmp_path / "here"
    existing.mkdir()
    assert problem(Need(str(existing), "model.name_or_path")) is None


def _response(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "https://huggingface.co/x"))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (hub_errors_module.GatedRepoError("gated", response=_response(403)), "is gated"),
        (
            hub_errors_module.RepositoryNotFoundError("missing", response=_response(404)),
            "does not exist on the hub",
        ),
        (httpx.ConnectError("no route"), "no connection to the hub"),
        (OSError("We couldn't connect to 'https://huggingface.co'"), "no connection to the hub"),
    ],
)
def test_load_failures_become_input_errors_naming_the_key(cache, monkeypatch, error, expected):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(InputError, match=expected) as info:
        with hub_errors("org/model", "model.name_or_path"):
            raise OSError("wrapped by the loader") from error
    assert str(info.value).startswith("model.name_or_path: org/model")


def test_other_errors_pass_through_unchanged(cache):
    assert hub_error_message(RuntimeError("shape mismatch"), "org/model", "model") is None
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with hub_errors("org/model", "model"):
            raise RuntimeError("shape mismatch")
