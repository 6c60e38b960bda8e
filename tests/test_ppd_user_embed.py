"""PPD's user encoder (Dang et al. CVPR 2025) on toy-vlm: batched, cached, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from mmalign.cli import main
from mmalign.config import InputError
from mmalign.data.schema import load_pairs
from mmalign.toy.datasets import build_dataset
from mmalign.vlm.load import load_vlm
from mmalign.vlm.user_embed import cached_user_embeddings, embed_users, examples_from_pairs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppd")
    build_dataset("users", root / "data", n=256, seed=0, users="train", progress=False)
    examples, ties = examples_from_pairs(load_pairs(root / "data" / "pairs"))
    return root, examples, ties, load_vlm("toy:vlm")


def test_one_embedding_per_user_batched_and_distinct(world) -> None:
    _, examples, ties, vlm = world
    assert ties == 0 and len(examples) == 128
    some = dict(list(examples.items())[:5])
    a = embed_users(vlm, some, shots=2, batch_size=5)
    b = embed_users(vlm, some, shots=2, batch_size=1)
    assert set(a) == set(some) and a["t00"].shape == (128,)
    for u in some:
        torch.testing.assert_close(a[u], b[u], atol=1e-4, rtol=1e-4)  # batching changes nothing
    assert (a["t00"] - a["t01"]).abs().max() > 1e-3  # different examples, different users
    last = embed_users(vlm, {"t00": some["t00"]}, shots=2, pooling="last")
    assert (last["t00"] - a["t00"]).abs().max() > 1e-3


def test_contrast_pooling_reads_which_image_was_preferred(world) -> None:
    _, examples, _, vlm = world
    some = {u: examples[u][:2] for u in ("t00", "t01")}
    flipped = {u: [(p, b, a) for p, a, b in e] for u, e in some.items()}
    # At the input layer a state depends on its token alone: swapping the two images of every
    # example negates a contrast exactly, and leaves the mean pooling as it was (it cannot
    # tell which image was preferred, which is why the contrasts exist).
    for pooling, width in (("contrast", 128), ("contrast_tokens", 16 * 128)):
        a = embed_users(vlm, some, shots=2, layer=0, pooling=pooling, batch_size=2)
        b = embed_users(vlm, flipped, shots=2, layer=0, pooling=pooling, batch_size=1)
        assert a["t00"].shape == (width,) and a["t00"].abs().max() > 1e-3
        torch.testing.assert_close(b["t00"], -a["t00"], atol=1e-5, rtol=1e-5)
    a = embed_users(vlm, some, shots=2, layer=0, pooling="mean")
    b = embed_users(vlm, flipped, shots=2, layer=0, pooling="mean")
    torch.testing.assert_close(a["t00"], b["t00"], atol=1e-5, rtol=1e-5)


def test_contrast_pooling_equals_a_direct_computation(world) -> None:
    from mmalign.vlm.user_embed import few_shot_conversation

    _, examples, _, vlm = world
    shots = examples["t01"][:2]
    got = embed_users(vlm, {"t01": shots}, shots=2, layer=-2, pooling="contrast_tokens")["t01"]
    messages, images = few_shot_conversation(shots)
    text = vlm.processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = vlm.processor(text=[text], images=images, return_tensors="pt")
    with torch.no_grad():
        h = vlm.model(**inputs, output_hidden_states=True).hidden_states[-2][0]
    where = (inputs["input_ids"][0] == vlm.model.config.image_token_index).nonzero().flatten()
    per_image = h[where].view(4, 16, -1)  # preferred, dispreferred, preferred, dispreferred
    want = ((per_image[0] - per_image[1]) + (per_image[2] - per_image[3])) / 2
    torch.testing.assert_close(got, want.flatten(), atol=1e-5, rtol=1e-5)
    pooled = embed_users(vlm, {"t01": shots}, shots=2, layer=-2, pooling="contrast")["t01"]
    torch.testing.assert_close(pooled, want.mean(0), atol=1e-5, rtol=1e-5)


def test_cached_and_reused_keyed_by_examples(world, tmp_path) -> None:
    _, examples, _, vlm = world
    some = dict(list(examples.items())[:3])
    first, hit1 = cached_user_embeddings(vlm, some, shots=2, cache_dir=tmp_path)
    again, hit2 = cached_user_embeddings(vlm, some, shots=2, cache_dir=tmp_path)
    assert (hit1, hit2) == (False, True)
    assert all(torch.equal(first[u], again[u]) for u in some)
    swapped = {u: list(reversed(e)) for u, e in some.items()}  # other examples: not the cache
    _, hit3 = cached_user_embeddings(vlm, swapped, shots=2, cache_dir=tmp_path)
    _, hit4 = cached_user_embeddings(vlm, some, shots=2, layer=-1, cache_dir=tmp_path)
    assert (hit3, hit4) == (False, False)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3


def test_too_few_examples_is_a_clear_error(world) -> None:
    _, examples, _, vlm = world
    with pytest.raises(InputError, match=r"fewer than --shots 3 examples: t00 \(2\)"):
        embed_users(vlm, {"t00": examples["t00"][:2]}, shots=3)
    many = {f"t{k:02d}": examples[f"t{k:02d}"][:1] for k in range(10)}
    with pytest.raises(InputError, match=r"10 user\(s\) .* t07 \(1\) and 2 more; lower"):
        embed_users(vlm, many, shots=2)
    with pytest.raises(InputError, match="pooling"):
        embed_users(vlm, examples, pooling="max")
    # a user whose pairs are all ties keeps its name, with no examples: the same clear error
    from datasets import Dataset

    image = examples["t00"][0][1]
    rows = Dataset.from_list([
        {"user_id": "a", "prompt": "p", "chosen": image, "rejected": image, "label": 1.0},
        {"user_id": "b", "prompt": "p", "chosen": image, "rejected": image, "label": 0.5},
    ])  # fmt: skip
    found, ties = examples_from_pairs(rows)
    assert ties == 1 and found["b"] == [] and len(found["a"]) == 1
    with pytest.raises(InputError, match=r"fewer than --shots 1 examples: b \(0\)"):
        embed_users(vlm, found, shots=1)


def test_cli_writes_embeddings_beside_the_data(world, monkeypatch, capsys) -> None:
    root, _, _, _ = world
    monkeypatch.setenv("MMALIGN_CACHE", str(root / "cache"))
    assert main(["data", "user-embed", str(root / "data"), "--shots", "2", "--layer", "-1"]) == 0
    info = json.loads((root / "data" / "user_embeddings" / "user_embeddings.json").read_text())
    assert info["layer"] == -1 and info["pooling"] == "mean" and info["shots"] == 2
    assert info["width"] == 128 and len(info["users"]) == 128 and info["cached"] is False
    assert main(["data", "user-embed", str(root / "data"), "--shots", "3"]) == 2
    assert "fewer than --shots 3" in capsys.readouterr().err


def test_contrast_pooling_needs_one_run_of_image_tokens_per_image() -> None:
    from mmalign.vlm.user_embed import contrast_pool, image_blocks

    ids = torch.tensor([5, 9, 9, 5, 9, 9, 5, 9, 9, 5, 9, 9, 5])
    blocks = image_blocks(ids, 9)
    assert [b.tolist() for b in blocks] == [[1, 2], [4, 5], [7, 8], [10, 11]]
    h = torch.arange(13.0)[:, None].expand(13, 3)
    # (mean of 1,2 - mean of 4,5 + mean of 7,8 - mean of 10,11) / 2 = -3
    assert contrast_pool(h, blocks, "contrast", shots=2).tolist() == [-3.0] * 3
    with pytest.raises(InputError, match="not one run per image"):
        contrast_pool(h, blocks[:3], "contrast", shots=2)
    with pytest.raises(InputError, match="not one run per image"):
        contrast_pool(h, [], "contrast_tokens", shots=2)


def test_cache_keyed_by_the_encoders_weights(world, tmp_path) -> None:
    """Other encoder weights (a fine-tuned copy of toy-vlm saved as a checkpoint) are not
    served the cached embeddings of toy-vlm's: they are computed again, and differ."""
    _, examples, _, vlm = world
    some = dict(list(examples.items())[:2])
    cache = tmp_path / "cache"
    base, _ = cached_user_embeddings(vlm, some, shots=2, cache_dir=cache)
    moved = load_vlm("toy:vlm")
    with torch.no_grad():
        for p in moved.model.get_output_embeddings().parameters():
            p.add_(0.5 * torch.randn_like(p))
        layer = moved.model.get_input_embeddings()
        layer.weight.mul_(1.5)
    moved.model.save_pretrained(tmp_path / "tuned")
    moved.processor.save_pretrained(tmp_path / "tuned")
    tuned = load_vlm(str(tmp_path / "tuned"))
    assert tuned.weights_key != vlm.weights_key
    other, hit = cached_user_embeddings(tuned, some, shots=2, cache_dir=cache)
    assert not hit and len(list(cache.glob("*.safetensors"))) == 2
    assert (other["t00"] - base["t00"]).abs().max() > 1e-3
    _, hit_again = cached_user_embeddings(tuned, some, shots=2, cache_dir=cache)
    assert hit_again


def test_a_tiny_llava_checkpoint_embeds_users(world, tmp_path) -> None:
    """The real-model path (`AutoModelForImageTextToText` from a saved checkpoint, as a LLaVA
    encoder such as LLaVA-OneVision loads): one run of image tokens per example image, so the
    contrast pooling works; embeddings are [image tokens x hidden] and per user."""
    from mmalign.vlm.tiny import tiny_llava

    _, examples, _, _ = world
    tiny_llava(tmp_path / "llava")
    vlm = load_vlm(str(tmp_path / "llava"))
    some = {u: examples[u][:2] for u in ("t00", "t01")}
    embs = embed_users(vlm, some, shots=2, layer=-2, pooling="contrast_tokens", batch_size=2)
    tokens = vlm.model.config.image_seq_length
    hidden = vlm.model.config.text_config.hidden_size
    assert embs["t00"].shape == (tokens * hidden,)
    assert (embs["t00"] - embs["t01"]).abs().max() > 1e-4
    one = embed_users(vlm, {"t00": some["t00"]}, shots=2, layer=-2, pooling="contrast_tokens",
                      batch_size=1)  # fmt: skip
    torch.testing.assert_close(one["t00"], embs["t00"], atol=1e-4, rtol=1e-4)
