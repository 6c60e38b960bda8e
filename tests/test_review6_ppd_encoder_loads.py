"""PPD's user encoder is loaded only by the process that computes the embeddings.

Every process of a launch (`accelerate launch`), and every caller on a cache hit, loaded the
whole encoder VLM only to compute the embeddings cache key (`VLM.weights_key` and the
processor's settings), then read the entry one process had computed: with
`ppd.encoder_device: cpu`, N processes held N copies of the VLM in host memory. The key is now
computed from a `VLMRef` (the weights' files, the config and the processor, no model), and the
model is loaded under the entry's lock by the one caller that computes it. The key is the one a
loaded `VLM` gives, so entries written before are still served.

Processes are threads here, as in test_review5_process_caches.py (file locks work between
threads: each holds its own descriptor).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

import mmalign.vlm.load
from mmalign.vlm import user_embed
from mmalign.vlm.load import VLM, load_vlm


def at_once(work: Callable[[int], Any]) -> list[Any]:
    """`work(0)` and `work(1)` on two threads at once (two processes of one launch: `0` is the
    main one); raises the first error either met."""
    results: list[Any] = [None, None]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = work(index)
        except BaseException as err:  # handed to the test thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,), name=f"rank{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def user_pairs() -> Dataset:
    def img(v: int) -> PILImage.Image:
        return PILImage.new("RGB", (32, 32), (v, 255 - v, 40))

    features = Features({"prompt": Value("string"), "chosen": Image(), "rejected": Image(),
                         "label": Value("float32"), "user_id": Value("string")})  # fmt: skip
    rows = [{"prompt": "a red circle", "chosen": img(10 * i), "rejected": img(200 - 10 * i),
             "label": 1.0, "user_id": u} for i, u in enumerate(["u0", "u1"])]  # fmt: skip
    return Dataset.from_list(rows, features=features)


@pytest.fixture(scope="module")
def encoder() -> VLM:
    return load_vlm("toy:vlm")


@pytest.fixture
def loads(monkeypatch, encoder: VLM) -> list[str]:
    """Every load of the encoder, by thread name. The loader hands out the one toy-vlm loaded
    for the module: transformers' loading patches torch globally, and two loads at once in one
    process leave the patch behind (two processes never share it)."""
    seen: list[str] = []

    def counted(*args: Any, **kwargs: Any) -> VLM:
        seen.append(threading.current_thread().name)
        return encoder

    monkeypatch.setattr(mmalign.vlm.load, "load_vlm", counted)
    return seen


def test_a_ref_keys_the_cache_as_the_loaded_vlm_without_loading_it(encoder, monkeypatch):
    from transformers import AutoModelForImageTextToText

    from mmalign.vlm.load import VLMRef

    examples = {"u0": [("a cat", PILImage.new("RGB", (8, 8), (1, 2, 3)),
                        PILImage.new("RGB", (8, 8), (4, 5, 6)))]}  # fmt: skip
    want = user_embed.cache_key(encoder, examples, 1, -2, "mean")

    def no_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model was loaded to compute the key")

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", no_model)
    ref = VLMRef("toy:vlm")
    assert ref.weights_key == encoder.weights_key
    assert user_embed.cache_key(ref, examples, 1, -2, "mean") == want
    assert (
        user_embed.cache_key(VLMRef("toy:vlm", dtype="bfloat16"), examples, 1, -2, "mean") != want
    )


def test_a_ref_to_an_adapter_folder_keys_as_the_loaded_vlm(tmp_path):
    """A fine-tuned encoder: a PEFT adapter folder (with its processor) on toy-vlm."""
    from mmalign.train.config import LoraConfig
    from mmalign.vlm.load import VLMRef
    from mmalign.vlm.lora import add_lora, save_adapter

    base = load_vlm("toy:vlm")
    folder = save_adapter(add_lora(base.model, LoraConfig(rank=4)), base.processor, tmp_path / "a")
    loaded = load_vlm(folder)
    ref = VLMRef(str(folder))
    assert ref.weights_key == loaded.weights_key != base.weights_key
    assert user_embed.cache_key(ref, {}, 1, -2, "mean") == user_embed.cache_key(
        loaded, {}, 1, -2, "mean"
    )


def test_a_ref_to_a_hub_id_keys_as_the_loaded_vlm(tmp_path, monkeypatch):
    """A hub id (an offline cache holding toy-vlm's files) with and without a revision."""
    from huggingface_hub import constants

    from mmalign.toy.paths import model_path
    from mmalign.vlm.load import VLMRef

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    repo = hub / "models--org--vlm"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for file in Path(model_path("vlm")).iterdir():
        os.symlink(file, snapshot / file.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    for revision in (None, "main"):
        loaded = load_vlm("org/vlm", revision=revision)
        ref = VLMRef("org/vlm", revision=revision)
        assert ref.weights_key == loaded.weights_key
        assert user_embed.cache_key(ref, {}, 1, -2, "mean") == user_embed.cache_key(
            loaded, {}, 1, -2, "mean"
        )


def test_two_processes_of_a_launch_load_the_encoder_once_and_none_on_a_hit(
    tmp_path, monkeypatch, loads
):
    """Through `PPDRecipe._make_trainable`, as each process of a launch runs it; with
    `ppd.encoder_device: cpu` every load was a copy of the encoder in host memory."""
    from mmalign.config import load_config
    from mmalign.diffusion.ppd_recipe import PPDRecipe
    from mmalign.train import Config

    monkeypatch.setattr(user_embed, "cache_root", lambda: tmp_path / "cache")
    monkeypatch.setattr("mmalign.diffusion.ppd.add_user_branch", lambda *a, **k: None)
    cfg = load_config(Config, "configs/toy/ppd.yaml", ["ppd.shots=1", "ppd.encoder_device=cpu"])
    rows = user_pairs()

    def start(process: int) -> PPDRecipe:
        recipe = PPDRecipe.__new__(PPDRecipe)
        recipe.cfg, recipe.rows, recipe.model = cfg, rows, None
        recipe.accelerator = SimpleNamespace(
            is_main_process=process == 0, device=torch.device("cpu")
        )
        recipe._make_trainable()
        return recipe

    main, other = at_once(start)  # a miss: one process computes, the other reads its entry
    assert len(loads) == 1  # was 2: one per process
    assert sorted([main.embed_info["cached"], other.embed_info["cached"]]) == [False, True]
    assert torch.equal(main._table, other._table)
    loads.clear()
    again = at_once(start)  # a hit for both (a resumed run, the next launch)
    assert loads == []  # was 2
    assert all(r.embed_info["cached"] for r in again)
    assert torch.equal(again[0]._table, main._table)


def test_data_user_embed_and_a_new_ppd_user_on_a_hit_load_no_encoder(
    tmp_path, monkeypatch, loads, encoder
):
    from mmalign.cli import main
    from mmalign.diffusion import ppd_users

    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    user_pairs().save_to_disk(str(tmp_path / "data" / "pairs"))
    args = ["data", "user-embed", str(tmp_path / "data"), "--shots", "1"]
    assert main([*args, "--out", str(tmp_path / "first")]) == 0
    assert len(loads) == 1
    assert main([*args, "--out", str(tmp_path / "second")]) == 0
    assert len(loads) == 1  # the second read the cache: no encoder loaded
    # a toy user outside a run (ppd_users), its examples' entry already cached
    import datasets

    monkeypatch.setattr("mmalign.toy.cache.toy_pairs", lambda *a, **k: "unused")
    monkeypatch.setattr(datasets, "load_from_disk", lambda path: user_pairs())
    real = user_embed.examples_from_pairs  # h01's examples: u0's
    monkeypatch.setattr(
        user_embed, "examples_from_pairs", lambda rows: ({"h01": real(rows)[0]["u0"]}, 0)
    )
    meta = {"encoder": "toy:vlm", "prompt_format": user_embed.PROMPT_FORMAT_VERSION,
            "shots": 1, "encoder_dtype": "float32"}  # fmt: skip
    first = ppd_users._toy_embeddings(["h01"], meta)
    assert len(loads) == 2  # computed: loaded
    second = ppd_users._toy_embeddings(["h01"], meta)
    assert len(loads) == 2 and torch.equal(first["h01"], second["h01"])
