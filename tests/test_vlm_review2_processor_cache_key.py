"""Caches of what a VLM scored are keyed by its weights, the pairs and the chat template; the
processor's image settings decide the scored sequences too (Qwen2-VL's min / max pixels set the
number of image tokens, LLaVA-NeXT's grid pinpoints and Idefics3's longest edge likewise). A
model folder whose processor_config.json changed (a smaller `max_pixels` to fit memory, say)
was served the precomputed reference scores and the CHES states of the old resolution: DPO
started with a nonzero margin against a reference of other sequences."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from datasets import Dataset
from test_vlm_train import _Accel, vlm_config
from vlm_helpers import pair_rows, random_images

from mmalign.data.cache import cache_root
from mmalign.vlm.diagnose import diagnose_rows
from mmalign.vlm.load import load_vlm
from mmalign.vlm.recipe import VLMRecipe
from mmalign.vlm.tiny import tiny_qwen2vl


def _resize_images(folder: Path, pixels: int) -> None:
    """Edit the saved Qwen2-VL processor: every image becomes `pixels` pixels."""
    path = folder / "processor_config.json"
    config = json.loads(path.read_text())
    config["image_processor"]["size"] = {"shortest_edge": pixels, "longest_edge": pixels}
    path.write_text(json.dumps(config))


def test_precomputed_reference_scores_follow_the_image_settings(tmp_path):
    tiny_qwen2vl(tmp_path / "qwen")

    def reference_scores() -> dict:
        cfg = vlm_config(tmp_path / "run", model={"name_or_path": str(tmp_path / "qwen")},
                         data={"toy": {"n": 8}}, vlm={"reference": "precomputed"})  # fmt: skip
        return VLMRecipe(cfg, _Accel()).scorer.reference_scores

    before = reference_scores()
    _resize_images(tmp_path / "qwen", 112 * 112)  # 16 image tokens an image instead of 4
    after = reference_scores()
    shutil.rmtree(cache_root() / "vlm-reference")
    fresh = reference_scores()
    assert after == pytest.approx(fresh, abs=1e-6)
    assert after != pytest.approx(before, abs=1e-3)


def test_cached_ches_states_follow_the_image_settings(tmp_path):
    tiny_qwen2vl(tmp_path / "qwen")
    rows = Dataset.from_list(pair_rows())

    def diagnosis():
        vlm = load_vlm(tmp_path / "qwen")
        return diagnose_rows(vlm.model, vlm.processor, rows, progress=False,
                             model_key=vlm.weights_key)  # fmt: skip

    before = diagnosis()
    _resize_images(tmp_path / "qwen", 112 * 112)
    after = diagnosis()
    assert not any("cache" in note for note in after.notes)  # a model pass, not the old states
    fresh = diagnose_rows(*(lambda v: (v.model, v.processor))(load_vlm(tmp_path / "qwen")), rows,
                          progress=False)  # fmt: skip
    assert after.columns["logp_chosen"] == pytest.approx(fresh.columns["logp_chosen"], abs=1e-6)
    assert after.columns["ches"] == pytest.approx(fresh.columns["ches"], rel=1e-6)
    assert before.columns["logp_chosen"] != pytest.approx(fresh.columns["logp_chosen"], abs=1e-3)


def test_user_embedding_cache_key_follows_the_image_settings():
    from mmalign.vlm.load import VLM
    from mmalign.vlm.user_embed import cache_key

    model, processor = tiny_qwen2vl()
    vlm = VLM(model, processor, "tiny-qwen2vl")
    a, b = random_images(2)
    examples = {"u1": [("a red circle", a, b)]}
    before = cache_key(vlm, examples, 1, -2, "mean")
    assert cache_key(vlm, examples, 1, -2, "mean") == before
    processor.image_processor.size = {"shortest_edge": 112 * 112, "longest_edge": 112 * 112}
    assert cache_key(vlm, examples, 1, -2, "mean") != before
