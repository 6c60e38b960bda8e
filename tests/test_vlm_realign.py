"""The Re-Align rDPO data builder: masking, retrieval, fill-in by the VLM shown a retrieved
image, the similarity filter, and the whole builder on toy-vlm."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from mmalign.toy import COLORS, SHAPES, render, sample_prompts
from mmalign.toy.models.vlm import answer, to_pil
from mmalign.toy.render import render_batch
from mmalign.toy.world import parse_prompt
from mmalign.vlm.collate import PairCollator, image_key
from mmalign.vlm.data import open_vlm_pairs
from mmalign.vlm.load import VLM, load_vlm
from mmalign.vlm.realign import build_realign, realign_dataset
from mmalign.vlm.realign_embed import (
    BagOfWordsEmbedder,
    ImageIndex,
    TokenEmbeddingEmbedder,
    VisionEncoderEmbedder,
    dissimilar,
)
from mmalign.vlm.realign_fill import SpanFiller
from mmalign.vlm.realign_lexicon import Lexicon
from mmalign.vlm.tiny import tiny_llava, tiny_qwen2vl


@pytest.fixture(scope="module")
def toy() -> VLM:
    return load_vlm("toy:vlm")


# --------------------------------------------------------------------------------- masking


def test_lexicon_covers_the_toy_world():
    lexicon = Lexicon()
    for prompt in sample_prompts(200, "all", seed=3):
        text = prompt.text
        masked = lexicon.mask(text, "_")
        # Only the articles and the "on ... background" frame survive.
        assert set(re.findall(r"[a-z]+", masked)) <= {"a", "an", "on"}, (text, masked)
    spans = lexicon.spans("A small red circle on the left on a blue background.")
    assert [s.word_class for s in spans] == ["size", "color", "object", "relation", "color",
                                             "object"]  # fmt: skip
    text = "Yes, two red circles are next to the cars and 3 dogs."
    masked = "<mask>, <mask> <mask> <mask> are <mask> the <mask> and <mask> <mask>."
    assert lexicon.mask(text) == masked
    assert Lexicon({"animal": ["dog"]}).mask("a red dog") == "a red <mask>"  # pluggable


# ------------------------------------------------------------------------------- filtering


def test_similarity_filter_threshold():
    bow = BagOfWordsEmbedder()
    words = [f"w{i}" for i in range(25)]
    reference = " ".join(words)
    one_of_25 = " ".join(["other", *words[1:]])  # cosine 24/25 = 0.96: too similar
    short = " ".join(words[:10])
    one_of_10 = " ".join(["other", *words[1:10]])  # cosine 9/10 = 0.90: passes
    emb = bow.embed([reference, one_of_25, short, one_of_10])
    assert float(emb[0] @ emb[1]) == pytest.approx(0.96)
    assert float(emb[2] @ emb[3]) == pytest.approx(0.90)
    # the builder's filter, row by row: candidate i against reference i
    checks = dissimilar([reference, one_of_25, one_of_10], [reference, reference, short], bow)
    assert [passes for passes, _ in checks] == [False, False, True]
    assert [sim for _, sim in checks] == pytest.approx([1.0, 0.96, 0.90])
    at = checks[2][1]  # a cosine equal to the threshold does not pass: strictly below
    rows = ([reference, one_of_25, one_of_10], [reference, reference, short])
    assert dissimilar(*rows, bow, threshold=at)[2] == (False, at)
    assert dissimilar([one_of_25], [reference], bow, threshold=0.97)[0][0] is True
    with pytest.raises(ValueError, match="2 candidates for 1 references"):
        dissimilar([one_of_10, short], [short], bow)


def test_token_embedding_embedder_is_centred(toy):
    emb = TokenEmbeddingEmbedder(toy).embed(["red", "red", "blue"])
    assert float(emb[0] @ emb[1]) == pytest.approx(1.0)
    assert float(emb[0] @ emb[2]) < 0.95  # uncentred it is 0.997 (module docstring)


# ------------------------------------------------------------------------------- retrieval


class MeanColor:
    """A deterministic image embedder: the mean RGB, centred on grey."""

    def embed(self, items):
        x = torch.tensor(np.stack([np.asarray(im, dtype=np.float32).mean((0, 1)) for im in
                                   items]))  # fmt: skip
        return torch.nn.functional.normalize(x - 127.5, dim=-1)


def _solid(rgb) -> PILImage.Image:
    return PILImage.new("RGB", (8, 8), rgb)


def test_retrieval_returns_the_nearest_other_image():
    colors = ((250, 0, 0), (200, 30, 30), (0, 0, 250), (30, 30, 200), (0, 250, 0))
    pool = [_solid(c) for c in colors]  # red, dark red, blue, navy, green
    index = ImageIndex(MeanColor(), [*pool, _solid((250, 0, 0))])  # 5: a copy of red
    found = index.search([pool[0], pool[2], pool[3], _solid((255, 10, 0))], k=2)
    assert found[0][0] == 1 and 0 not in found[0] and 5 not in found[0]  # never itself
    assert found[1][0] == 3 and found[2][0] == 2
    assert found[3][0] in (0, 5)  # a query not in the pool may match any pool image
    assert sorted(index.search([pool[0]], k=10)[0]) == [1, 2, 3, 4]  # all the others


def test_vision_encoder_retrieval_on_toy(toy):
    """toy-vlm's own features put a re-render of the same prompt (new jitter) nearest."""
    texts = [
        "a red circle on a blue background",
        "a green cross on a yellow background",
        "a purple triangle on a white background",
        "a blue square on an orange background",
    ]
    images = [to_pil(render(t)) for t in texts]
    g = torch.Generator().manual_seed(0)
    rerender = [to_pil(render_batch([parse_prompt(t)], 32, "flat", jitter=g)[0]) for t in texts]
    index = ImageIndex(VisionEncoderEmbedder(toy), rerender)
    assert [r[0] for r in index.search(images, k=1)] == [0, 1, 2, 3]
    assert index.search([rerender[1]], k=3)[0] == [
        i for i in index.search([rerender[1]], k=3)[0] if i != 1
    ]


def test_open_clip_embedder_behind_the_same_interface():
    pytest.importorskip("open_clip")
    from mmalign.vlm.realign_embed import OpenClipEmbedder

    embedder = OpenClipEmbedder("ViT-S-32", pretrained=None)  # random weights: no download
    images = [_solid(c) for c in ((250, 0, 0), (0, 0, 250), (0, 250, 0))]
    emb = embedder.embed([*images, images[0]])
    assert emb.shape[0] == 4 and torch.allclose(emb.norm(dim=-1), torch.ones(4))
    assert float(emb[0] @ emb[3]) == pytest.approx(1.0, abs=1e-5)
    found = ImageIndex(embedder, images).search([images[1]], k=3)[0]
    assert sorted(found) == [0, 2]


# --------------------------------------------------------------------------------- fill-in


def test_fill_of_a_whole_answer_is_the_models_answer_about_the_retrieved_image(toy):
    question = "What color is the shape?"
    shown = to_pil(render("a red circle on a blue background"))
    others = [to_pil(render(f"a {c} circle on a blue background")) for c in ("green", "white")]
    lexicon = Lexicon()
    fills = SpanFiller(toy).fill([question] * 2, others, ["red", "red"],
                                 [lexicon.spans("red")] * 2)  # fmt: skip
    assert fills == [answer(toy.model, toy.processor, im, question) for im in others]
    assert answer(toy.model, toy.processor, shown, question) == "red"
    assert fills == ["green", "white"]


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_multi_span_fill_keeps_the_unmasked_text(family):
    model, processor = (tiny_llava if family == "llava" else tiny_qwen2vl)()
    vlm = VLM(model, processor, "tiny")
    images = [_solid(c).resize((56, 56)) for c in ((250, 0, 0), (0, 0, 250), (0, 250, 0))]
    emb = VisionEncoderEmbedder(vlm).embed([*images, images[0]])
    assert emb.shape[0] == 4 and float(emb[0] @ emb[3]) == pytest.approx(1.0, abs=1e-5)
    text = "The red circle is on the left, near two squares."
    spans = Lexicon().spans(text)
    assert [text[s.start : s.end] for s in spans] == ["red", "circle", "on the left", "near",
                                                      "two", "squares"]  # fmt: skip
    fill = SpanFiller(vlm, max_new_tokens=6).fill(["<image>\nDescribe."], images[1:2], [text],
                                                  [spans])[0]  # fmt: skip
    # The frame around the masked words is unchanged, whatever the random model wrote (at
    # most as many words per span as the span had).
    assert re.fullmatch(r"The \S+ \S+ is \S+( \S+){0,2}, \S+ \S+ \S+\.", fill), fill
    assert fill != text


# --------------------------------------------------------------------------------- builder


def test_builder_end_to_end_on_toy(toy):
    rows, _ = open_vlm_pairs("toy:vqa", "train", max_samples=16)
    rows = [dict(r) for r in rows]
    result = build_realign(toy, rows, k=3)
    report = result.report
    assert report.total == 16 and report.kept + report.num_skipped == 16
    assert set(report.skipped) <= {"no_fill_passed_filter"}
    assert report.kept >= 8, str(report)  # measured: 13 of 16 on this seed
    pool = {image_key(r["image"]) for r in rows}
    bow = BagOfWordsEmbedder()
    for r, sim in zip(result.rows, result.similarities, strict=True):
        assert r["rejected"] != r["chosen"] and sim < 0.95
        emb = bow.embed([r["chosen"], r["rejected"]])
        assert float(emb[0] @ emb[1]) == pytest.approx(sim)
        assert image_key(r["retrieved_image"]) in pool
        assert image_key(r["retrieved_image"]) != image_key(r["image"])
        # A one-word toy answer is one masked span: y_l is the model's answer about v_l.
        assert r["rejected"] == answer(toy.model, toy.processor, r["retrieved_image"],
                                       r["prompt"])  # fmt: skip
    ds = realign_dataset(result)
    assert len(ds) == report.kept and ds["chosen"] == [r["chosen"] for r in result.rows]
    batch = PairCollator(toy.processor, ["main", "visual"])([dict(r) for r in ds])
    assert len(batch.sequence_keys) == 3 * len(ds)  # chosen, rejected, chosen under v_l


def test_builder_counts_every_skip_and_uses_the_models_answer(toy):
    rows, _ = open_vlm_pairs("toy:vqa", "train", max_samples=6)
    rows = [dict(r) for r in rows]
    rows[1]["prompt"] = "  "
    rows[2]["images"], rows[2]["image"] = [rows[2]["image"]] * 2, None
    pool = [to_pil(render(f"a {c} {s} on a white background")) for c in COLORS[:4]
            for s in SHAPES]  # fmt: skip
    result = build_realign(toy, rows, pool, chosen="model", k=len(pool))
    report = result.report
    assert report.total == 6 and report.skipped.get("missing_prompt") == 1
    assert report.skipped.get("needs_one_image") == 1
    for r in result.rows:
        assert r["chosen"] == answer(toy.model, toy.processor, r["image"], r["prompt"])
        assert any(image_key(r["retrieved_image"]) == image_key(p) for p in pool)
    with pytest.raises(ValueError, match="chosen must be 'data' or 'model'"):
        build_realign(toy, rows, chosen="gold")


def test_cli_builds_pairs_the_recipe_reads(tmp_path, capsys):
    from mmalign.cli import main

    out = tmp_path / "realign"
    assert main(["data", "realign", "--model", "toy:vlm", "--data", "toy:vqa",
                 "--max-samples", "8", "--out", str(out)]) == 0  # fmt: skip
    ds, report = open_vlm_pairs(out, "train")
    assert len(ds) == report.kept > 0 and ds[0]["retrieved_image"] is not None
    assert ds[0]["source"].startswith("re-align:")  # read as saved pairs, kept as built
    assert (out / "realign_summary.json").is_file()
    assert "re-align pairs" in capsys.readouterr().out
