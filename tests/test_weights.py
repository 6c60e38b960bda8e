"""Cache keys follow the weights: a rebuilt model never reuses data its predecessor made."""

from __future__ import annotations

import os

from mmalign.toy.cache import toy_data_folder
from mmalign.weights import weight_files


def _pipeline_folder(root):
    (root / "unet").mkdir(parents=True)
    (root / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x" * 10)
    (root / "unet" / "config.json").write_text("{}")
    (root / "model_index.json").write_text("{}")
    return root


def test_weight_files_lists_weights_only_and_recurses_on_request(tmp_path):
    folder = _pipeline_folder(tmp_path / "pipe")
    assert weight_files(folder) == []  # the top level holds no weights
    ((name, size, _mtime),) = weight_files(folder, recursive=True)
    assert (name, size) == ("unet/diffusion_pytorch_model.safetensors", 10)
    assert weight_files(tmp_path / "missing") == weight_files("org/hub-id") == []


def test_toy_data_of_a_sampled_kind_is_rebuilt_when_the_model_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    model = str(_pipeline_folder(tmp_path / "pipe"))
    options = {"n": 8}
    before = toy_data_folder("pairs", options, model)
    rendered = toy_data_folder("vqa", options, model)
    assert toy_data_folder("pairs", options, model) == before  # reading changes nothing
    weights = tmp_path / "pipe" / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"y" * 10)
    os.utime(weights, ns=(1, 1))  # a rebuild: same size, other mtime
    assert toy_data_folder("pairs", options, model) != before
    # Rendered kinds never sample a model: their key ignores its weights.
    assert toy_data_folder("vqa", options, model) == rendered
    assert toy_data_folder("pairs", {"n": 9}, model) != toy_data_folder("pairs", options, model)


def test_concurrent_runs_build_a_toy_dataset_once(tmp_path, monkeypatch):
    """Two runs ask for the same toy data at once: one builds, the other waits and reuses it.

    The build does not start until both runs have reached the lock (no sleep deciding the
    overlap), so the second run really waits on a held lock."""
    import threading

    import mmalign.data.cache as cache
    import mmalign.toy.datasets as datasets
    from mmalign.toy.cache import toy_pairs

    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    arrived = threading.Semaphore(0)
    real_lock = cache.FileLock

    class CountingLock:  # the real file lock, announcing each run that reaches it
        def __init__(self, path: str):
            self.lock = real_lock(path)

        def __enter__(self):
            arrived.release()
            return self.lock.__enter__()

        def __exit__(self, *exc):
            return self.lock.__exit__(*exc)

    calls = []

    def build_when_both_wait(kind, out_dir, **options):
        calls.append(kind)
        assert arrived.acquire(timeout=30) and arrived.acquire(timeout=30), "no second run"
        (out_dir / "pairs").mkdir(parents=True)
        (out_dir / "summary.json").write_text("{}")

    monkeypatch.setattr(cache, "FileLock", CountingLock)
    monkeypatch.setattr(datasets, "build_dataset", build_when_both_wait)
    start = threading.Barrier(2)
    found, errors = [], []

    def run():
        start.wait()
        try:
            found.append(toy_pairs("vqa", {"n": 4}))
        except Exception as e:  # reported in the main thread, where pytest sees it
            errors.append(e)

    runs = [threading.Thread(target=run) for _ in range(2)]
    for r in runs:
        r.start()
    for r in runs:
        r.join(timeout=60)
    assert errors == []
    assert calls == ["vqa"]
    assert found[0] == found[1] and (found[0] / "..").resolve().joinpath("summary.json").is_file()
