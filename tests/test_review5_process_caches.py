"""Caches that several runs, or the processes of one launch, want at the same time.

- Two runs side by side (configs/toy/dpo.yaml and mapo.yaml: the same pairs, so the same
  pre-encoding cache) both pre-encoded into one `.partial` folder; the second crashed 3 times
  out of 3 from an empty cache. Now the build holds a file lock and the second reuses it.
- PPD's user embeddings were computed by every process of a launch, each writing the same
  cache entry through one temporary file name; now one computes, the others read its entry.
- The dense weights of two runs side by side: computed once, the other run reads the file.

Processes are threads here (file locks work between threads: each holds its own descriptor).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage


def at_once(work: Callable[[int], Any]) -> list[Any]:
    """`work(0)` and `work(1)` on two threads at once (two runs, or two processes of one
    launch: `0` is the main one); raises the first error either met."""
    results: list[Any] = [None, None]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = work(index)
        except BaseException as err:  # handed to the test thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return results


# ---------------------------------------------------------------- pre-encoding


class FakeEncoder:
    """An encoder whose first call waits (up to 0.5 s) for another build to be encoding too,
    so two unlocked builds overlap for sure."""

    def __init__(self, rendezvous: threading.Barrier) -> None:
        self.calls: list[str] = []
        self.rendezvous = rendezvous

    def encode(self, batch: dict[str, Any], rows: list[int]) -> dict[str, torch.Tensor]:
        first = threading.current_thread().name not in self.calls
        self.calls.append(threading.current_thread().name)
        if first:
            try:
                self.rendezvous.wait()
            except threading.BrokenBarrierError:
                pass  # the other build never came: it waits on the lock
        b = len(rows)
        return {
            "latents": batch["pixels"].view(b, 2, 3, 4, 4) * 2,
            "prompt_embeds": torch.full((b, 3, 5), float(rows[0])),
            "label": batch["label"],
        }

    def empty(self) -> dict[str, torch.Tensor]:
        return {"prompt_embeds": torch.zeros(1, 3, 5)}


def pair_images(n: int = 6) -> list[dict[str, Any]]:
    return [
        {
            "prompt": f"p{i}",
            "pixels": torch.full((2, 3, 4, 4), float(i)),
            "label": torch.tensor(1.0),
        }
        for i in range(n)
    ]


def test_two_runs_pre_encoding_the_same_cache_at_once(tmp_path):
    from mmalign.diffusion.encode import EncodedPairs, precompute

    encoder = FakeEncoder(threading.Barrier(2, timeout=0.5))
    folder = tmp_path / "encoded" / "key"
    results = at_once(lambda run: precompute(encoder, pair_images(), folder, "k",
                                             batch_size=2, progress=False))  # fmt: skip
    assert results == [folder, folder]
    # one build of 3 batches; the other run found it whole
    assert len(encoder.calls) == 3 and len(set(encoder.calls)) == 1
    cached = EncodedPairs(folder)
    assert len(cached) == 6 and float(cached[5]["latents"].flatten()[0]) == 10.0
    assert not folder.with_name("key.partial").exists()


# ---------------------------------------------------------------- PPD user embeddings


def user_pairs() -> Dataset:
    def img(v: int) -> PILImage.Image:
        return PILImage.new("RGB", (32, 32), (v, 255 - v, 40))

    features = Features({"prompt": Value("string"), "chosen": Image(), "rejected": Image(),
                         "label": Value("float32"), "user_id": Value("string")})  # fmt: skip
    rows = [{"prompt": "a red circle", "chosen": img(10 * i), "rejected": img(200 - 10 * i),
             "label": 1.0, "user_id": u} for i, u in enumerate(["u0", "u1"])]  # fmt: skip
    return Dataset.from_list(rows, features=features)


def test_ppd_user_embeddings_are_computed_once_per_launch(tmp_path, monkeypatch):
    from mmalign.config import load_config
    from mmalign.diffusion.ppd_recipe import PPDRecipe
    from mmalign.train import Config
    from mmalign.vlm import user_embed

    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("mmalign.vlm.user_embed.cache_root", lambda: tmp_path / "cache")
    monkeypatch.setattr("mmalign.diffusion.ppd.add_user_branch", lambda *a, **k: None)
    computed: list[str] = []
    embed = user_embed.embed_users

    def counted(*args: Any, **kwargs: Any) -> Any:
        computed.append(threading.current_thread().name)
        return embed(*args, **kwargs)

    monkeypatch.setattr("mmalign.vlm.user_embed.embed_users", counted)
    # loaded once, outside the threads: transformers' loading patches torch globally (its
    # empty-weights context), and two loads at once in one process leave the patch behind
    # (later models then load on the meta device); two processes never share it
    from mmalign.vlm.load import load_vlm

    encoder = load_vlm(load_config(Config, "configs/toy/ppd.yaml").ppd.encoder)
    monkeypatch.setattr("mmalign.vlm.load.load_vlm", lambda *a, **k: encoder)
    cfg = load_config(Config, "configs/toy/ppd.yaml", ["ppd.shots=1"])
    rows = user_pairs()

    def start(process: int) -> PPDRecipe:
        recipe = PPDRecipe.__new__(PPDRecipe)
        recipe.cfg, recipe.rows, recipe.model = cfg, rows, None
        recipe.accelerator = SimpleNamespace(
            is_main_process=process == 0, device=torch.device("cpu")
        )
        recipe._make_trainable()
        return recipe

    main, other = at_once(start)
    # before: every process ran the encoder and wrote the same cache entry
    assert len(computed) == 1
    assert main.users == other.users == ["u0", "u1"]
    assert torch.equal(main._table, other._table)


# ---------------------------------------------------------------- dense weights


def test_two_runs_computing_the_same_dense_weights_compute_them_once(tmp_path, monkeypatch):
    from mmalign.diffusion.dense import pair_weights
    from mmalign.train.diffusion_config import DenseConfig

    calls: list[str] = []
    rendezvous = threading.Barrier(2, timeout=0.5)

    class Flaws:
        def dense(self, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
            if threading.current_thread().name not in calls:
                try:
                    rendezvous.wait()  # both runs computing at once, when nothing stops them
                except threading.BrokenBarrierError:
                    pass
            calls.append(threading.current_thread().name)
            return {"artifact": images[:, :1].clamp(0, 1)}

    spec = DenseConfig(scorer="toy:flaws")
    images = [{"prompt": f"p{i}", "pixels": torch.rand(2, 3, 8, 8) * 2 - 1} for i in range(3)]
    monkeypatch.setattr("mmalign.rewards.get_scorer", lambda name, **kw: Flaws())
    a, b = at_once(lambda run: pair_weights(spec, images, 4, cache_dir=tmp_path))
    assert len(set(calls)) == 1  # one run computed, the other read its file
    assert torch.equal(a.weights, b.weights)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []
