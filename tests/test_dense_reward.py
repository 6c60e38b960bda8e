"""The dense reward head (mmalign/rewards/dense): save/load, batching, `dense:<path>`."""

from __future__ import annotations

import json
import zlib

import pytest
import torch

from mmalign.config import InputError
from mmalign.rewards import get_scorer
from mmalign.rewards.dense import DenseRewardModel, hash_tokens
from mmalign.rewards.dense.model import fuse_tokens
from mmalign.toy.paths import model_path


def _toy_head(tmp_path, seed: int = 0):
    torch.manual_seed(seed)
    model = DenseRewardModel.from_backbone("toy", dim=32, depth=1, heads=2)
    return model, model.save_pretrained(tmp_path / "head")


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


PROMPTS = ["a red circle on a blue background", "a green square", "a yellow triangle"] * 2


def test_toy_head_saves_loads_and_scores(tmp_path):
    model, folder = _toy_head(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = DenseRewardModel.from_pretrained(folder)
    ids, mask = model.tokenize(PROMPTS)
    images = _images(6)
    with torch.no_grad():
        a, b = model.eval()(images, ids, mask), loaded(images, ids, mask)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (6, 2, 32, 32) and a[1].shape == (6, 4)
    assert 0 <= float(a[0].min()) and float(a[1].max()) <= 1


def test_fusion_equals_torch_transformer_encoder_with_padding():
    """fuse_tokens computes nn.TransformerEncoder's own forward (padding masked), exactly in
    training mode and in eval without grad (where PyTorch would take its fast path); and the
    toy tokenizer pads, truncates and hashes words as before."""
    torch.manual_seed(0)
    model = DenseRewardModel.from_backbone("toy", dim=32, depth=2, heads=4)
    x = torch.randn(3, 20, 32)
    keep = torch.ones(3, 20, dtype=torch.bool)
    keep[0, 15:], keep[2, 17:] = False, False
    assert torch.equal(fuse_tokens(model.fusion, x, keep),
                       model.fusion(x, src_key_padding_mask=~keep))  # fmt: skip
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            fuse_tokens(model.fusion, x, keep), model.fusion(x, src_key_padding_mask=~keep),
            atol=2e-6, rtol=0,
        )  # fmt: skip
    # a padded position changes nothing for the others; an attended one does
    y = x.clone()
    y[0, 16] += torch.randn(32)
    out, moved = fuse_tokens(model.fusion, x, keep), fuse_tokens(model.fusion, y, keep)
    assert torch.equal(out[0, :15], moved[0, :15])
    y[1, 16] += torch.randn(32)
    assert not torch.allclose(out[1, :15], fuse_tokens(model.fusion, y, keep)[1, :15])
    ids, mask = hash_tokens(["A red, circle", "one two three four five"], vocab=64, length=4)
    assert ids.shape == (2, 4) and mask.tolist() == [[True] * 3 + [False], [True] * 4]
    assert ids[0, 0] == 1 + zlib.crc32(b"a") % 63 and ids[0, 3] == 0


def test_dense_scorer_through_get_scorer_batched_equals_one_at_a_time(tmp_path):
    _, folder = _toy_head(tmp_path)
    scorer = get_scorer(f"dense:{folder}", device="cpu", batch_size=4)
    images = _images(6)
    out = scorer.dense(images, PROMPTS)
    assert set(out) == {"alignment", "aesthetics", "plausibility", "overall", "misalignment",
                        "artifact"}  # fmt: skip
    assert out["artifact"].shape == (6, 1, 32, 32) and out["overall"].shape == (6,)
    one = [scorer.dense(images[i : i + 1], PROMPTS[i : i + 1]) for i in range(6)]
    for key, value in out.items():
        torch.testing.assert_close(value, torch.cat([o[key] for o in one]), atol=1e-5, rtol=1e-5)
    # score skips the heatmap decoder and gives exactly dense's overall
    assert torch.equal(scorer.score(images, PROMPTS), out["overall"])
    calls = []
    hook = scorer.model.decoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        scorer.score(images, PROMPTS)
    finally:
        hook.remove()
    assert not calls
    # a training output_dir (the head under reward/) works too
    run = tmp_path / "run"
    DenseRewardModel.from_pretrained(folder).save_pretrained(run / "reward")
    torch.testing.assert_close(get_scorer(f"dense:{run}", device="cpu").score(images, PROMPTS),
                               out["overall"])  # fmt: skip


def test_mixed_image_sizes(tmp_path):
    """dense() puts each heatmap on its image's own grid, so one call takes one size (a clear
    error otherwise, never a crash between batches); score() takes any mix."""
    from PIL import Image

    _, folder = _toy_head(tmp_path)
    scorer = get_scorer(f"dense:{folder}", device="cpu", batch_size=2)
    g = torch.Generator().manual_seed(3)
    pil = [
        Image.fromarray((torch.rand(s, s, 3, generator=g) * 255).byte().numpy())
        for s in (64, 64, 32)
    ]
    with pytest.raises(InputError, match=r"2 sizes \(32x32, 64x64\)"):
        scorer.dense(pil, PROMPTS[:3])
    assert scorer.dense(pil[:2], PROMPTS[:2])["artifact"].shape == (2, 1, 64, 64)
    mixed = scorer.score(pil, PROMPTS[:3])
    one = torch.cat([scorer.score([im], [p]) for im, p in zip(pil, PROMPTS[:3], strict=True)])
    torch.testing.assert_close(mixed, one, atol=2e-3, rtol=0)


def test_wrong_checkpoints_are_named(tmp_path):
    _, folder = _toy_head(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["dim"] = 16  # the weights were saved at dim 32
    config["heads"] = 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"key '.*' has shape \(.*32"):
        DenseRewardModel.from_pretrained(folder)
    with pytest.raises(InputError, match="does not exist"):
        get_scorer(f"dense:{tmp_path / 'nothing'}")
    with pytest.raises(ValueError, match="dense:<path>"):
        get_scorer("dense")


def save_tiny_clip(folder):  # type: ignore[no-untyped-def]
    """A tiny random CLIPModel (seed 0) with toy-sd's tokenizer, saved in `folder`."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    tokenizer = AutoTokenizer.from_pretrained(model_path("sd") / "tokenizer")
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "intermediate_size": 37,
                     "max_position_embeddings": 24},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37},
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    clip = CLIPModel(config)
    clip.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return clip


def test_clip_backbone_round_trips_tiny_random_clip(tmp_path):
    clip = save_tiny_clip(tmp_path / "clip")
    model = DenseRewardModel.from_backbone(str(tmp_path / "clip"), dim=32, heads=2, depth=1)
    # the backbone's weights are the checkpoint's
    torch.testing.assert_close(
        model.clip_model.vision_model.embeddings.patch_embedding.weight,
        clip.vision_model.embeddings.patch_embedding.weight,
    )
    folder = model.save_pretrained(tmp_path / "head")
    assert (folder / "tokenizer").is_dir()
    scorer = get_scorer(f"dense:{folder}", device="cpu", batch_size=2)
    images = _images(3)
    out = scorer.dense(images, PROMPTS[:3])
    ids, mask = model.tokenize(PROMPTS[:3])
    with torch.no_grad():
        maps, scores = model.eval()(images, ids, mask)
    torch.testing.assert_close(out["overall"], scores[:, 3])
    torch.testing.assert_close(out["artifact"], maps[:, 1:2])
