"""The ImageReward scorer (Xu et al. 2023) on tiny random weights saved with the released
`ImageReward.pt`'s key names: the round trip through the scorer, the key converter, and the
transformers-based forward against a plain-torch one written from the checkpoint's layout
(timm ViT blocks, BLIP's med BERT with cross-attention, the MLP head)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmalign.rewards import get_scorer, tiny
from mmalign.rewards.common import clip_pixels
from mmalign.rewards.imagereward import IGNORED, ImageRewardModel, convert_state_dict

PROMPTS = [
    "a red circle on a blue background",
    "a green square on a white background",
    "a yellow star",
    "a white triangle on a black background",
    "a photo of a cat",
]
# ImageReward.mean / .std in the package, written out here independently of the module.
PACKAGE_MEAN, PACKAGE_STD = 0.16717362830052426, 1.0333394966054072


def images(n: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 40, 48, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny.save_imagereward(tmp_path_factory.mktemp("imagereward"), seed=5)


@pytest.fixture(scope="module")
def scorer(files):
    folder, med_config, tokenizer = files
    return get_scorer(
        "imagereward", path=folder, med_config=med_config, tokenizer=tokenizer, batch_size=2
    )


@pytest.fixture(scope="module")
def state(files):
    return torch.load(files[0] / "ImageReward.pt", weights_only=True)


def test_tiny_checkpoint_round_trip(scorer):
    x = images()
    s = scorer.score(x, PROMPTS)  # batches of 2, 2, 1
    assert scorer.name == "imagereward" and scorer.size == 32
    assert s.shape == (5,) and s.dtype == torch.float32 and bool(s.isfinite().all())
    alone = torch.cat([scorer.score(x[i : i + 1], PROMPTS[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(s, alone, rtol=0, atol=1e-5)
    # The prompt is used (cross-attention from the text), and so is the image.
    assert (s - scorer.score(x, PROMPTS[::-1])).abs()[[0, 1, 3, 4]].min() > 1e-4
    assert (s - scorer.score(images(seed=1), PROMPTS)).abs().min() > 1e-4


def test_tokens_are_the_package_scoring_ones(scorer):
    text = scorer.tokens(["a red circle", "zebra"])
    assert text.input_ids.shape == (2, 35)  # padding="max_length", max_length=35
    tok = scorer.tokenizer
    assert bool((text.input_ids[:, 0] == tok.cls_token_id).all())  # [CLS] stays first
    assert int(text.attention_mask[0].sum()) == 5  # [CLS] a red circle [SEP]
    # BLIP's added tokens sit at the end of the vocabulary, as in the checkpoint's 30524.
    n = scorer.model.text.config.vocab_size
    assert tok.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [n - 2, n - 1] and len(tok) == n
    long = scorer.tokens(["a " * 100])
    assert long.input_ids.shape == (1, 35) and int(long.attention_mask.sum()) == 35


def test_converter_maps_every_checkpoint_key(state, scorer):
    converted, ignored = convert_state_dict(state)
    assert sorted(ignored) == sorted(IGNORED)  # the projections and position_ids, nothing else
    assert len(converted) + len(ignored) == len(state)
    loaded = scorer.model.state_dict()
    assert set(converted) == set(loaded)
    assert all(torch.equal(converted[k], loaded[k]) for k in loaded)  # the checkpoint, not init
    assert "vision.encoder.layers.1.self_attn.qkv.weight" in converted
    assert "text.encoder.layer.0.crossattention.self.key.weight" in converted


def test_unexpected_and_missing_keys_are_named(state, files):
    med = files[1]
    with pytest.raises(ValueError, match=r"unexpected .*blip\.itm_head\.weight"):
        extra = {**state, "blip.itm_head.weight": torch.zeros(2, 32)}
        ImageRewardModel.from_state_dict(extra, med)
    partial = {k: v for k, v in state.items() if not k.endswith("blocks.1.attn.qkv.bias")}
    with pytest.raises(ValueError, match=r"lacks blip\.visual_encoder\.blocks\.1\.attn\.qkv\.bias"):
        ImageRewardModel.from_state_dict(partial, med)
    partial = {k: v for k, v in state.items() if "layer.1.crossattention.self.value" not in k}
    with pytest.raises(ValueError, match=r"lacks blip\.text_encoder\.encoder\.layer\.1\.cross"):
        ImageRewardModel.from_state_dict(partial, med)


def test_a_med_config_that_does_not_fit_the_checkpoint_names_the_tensor(state, files):
    import json

    med = json.loads(files[1].read_text())
    with pytest.raises(ValueError, match=r"word_embeddings\.weight has shape"):
        ImageRewardModel.from_state_dict(state, {**med, "vocab_size": 30524})


def reference(sd: dict, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, *,
              vit_heads: int, text_heads: int, qkv_order=(0, 1, 2)) -> torch.Tensor:  # fmt: skip
    """ImageReward's score written from the checkpoint's layout in plain torch: timm's ViT
    (qkv reshaped to [B, N, 3, heads, d]), BLIP's med BERT (post-norm, cross-attention to every
    image token, -10000 padding mask), the head on the [CLS] feature, z-normalised."""

    def ln(x, prefix, eps):
        return F.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"], eps)

    def lin(x, prefix):
        return F.linear(x, sd[prefix + ".weight"], sd[prefix + ".bias"])

    v = "blip.visual_encoder"
    patch = sd[f"{v}.patch_embed.proj.weight"]
    x = F.conv2d(pixels, patch, sd[f"{v}.patch_embed.proj.bias"], stride=patch.shape[-1])
    x = x.flatten(2).transpose(1, 2)
    b, width = x.shape[0], x.shape[-1]
    x = torch.cat([sd[f"{v}.cls_token"].expand(b, -1, -1), x], 1) + sd[f"{v}.pos_embed"]
    n, d = x.shape[1], width // vit_heads
    depth = len({k.split(".")[3] for k in sd if k.startswith(f"{v}.blocks.")})
    for i in range(depth):
        p = f"{v}.blocks.{i}"
        qkv = lin(ln(x, f"{p}.norm1", 1e-6), f"{p}.attn.qkv")
        qkv = qkv.reshape(b, n, 3, vit_heads, d).permute(2, 0, 3, 1, 4)
        q, k, val = (qkv[j] for j in qkv_order)
        att = (q @ k.transpose(-2, -1) * d**-0.5).softmax(-1)
        x = x + lin((att @ val).transpose(1, 2).reshape(b, n, width), f"{p}.attn.proj")
        x = x + lin(F.gelu(lin(ln(x, f"{p}.norm2", 1e-6), f"{p}.mlp.fc1")), f"{p}.mlp.fc2")
    image = ln(x, f"{v}.norm", 1e-6)

    t = "blip.text_encoder"
    length = ids.shape[1]
    h = sd[f"{t}.embeddings.word_embeddings.weight"][ids]
    h = h + sd[f"{t}.embeddings.position_embeddings.weight"][:length]
    h = ln(h, f"{t}.embeddings.LayerNorm", 1e-12)
    pad = (1.0 - mask[:, None, None, :].float()) * -10000.0

    def heads(z):
        return z.reshape(z.shape[0], z.shape[1], text_heads, -1).transpose(1, 2)

    def attention(prefix, hidden, source, bias):
        q, k = heads(lin(hidden, f"{prefix}.self.query")), heads(lin(source, f"{prefix}.self.key"))
        val = heads(lin(source, f"{prefix}.self.value"))
        att = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5 + bias).softmax(-1)
        ctx = (att @ val).transpose(1, 2).reshape(hidden.shape)
        return ln(lin(ctx, f"{prefix}.output.dense") + hidden, f"{prefix}.output.LayerNorm", 1e-12)

    n_layers = len({k.split(".")[4] for k in sd if k.startswith(f"{t}.encoder.layer.")})
    for i in range(n_layers):
        p = f"{t}.encoder.layer.{i}"
        h = attention(f"{p}.attention", h, h, pad)
        h = attention(f"{p}.crossattention", h, image, 0.0)
        ff = lin(F.gelu(lin(h, f"{p}.intermediate.dense")), f"{p}.output.dense")
        h = ln(ff + h, f"{p}.output.LayerNorm", 1e-12)
    feat = h[:, 0]
    for i in (0, 2, 4, 6, 7):  # no activations between the head's linear layers
        feat = lin(feat, f"mlp.layers.{i}")
    return (feat.squeeze(-1) - PACKAGE_MEAN) / PACKAGE_STD


def test_forward_equals_a_plain_torch_forward_from_the_checkpoint(state, scorer):
    x = images()
    text = scorer.tokens(PROMPTS)
    with torch.no_grad():
        want = reference(state, clip_pixels(x, 32), text.input_ids, text.attention_mask,
                         vit_heads=2, text_heads=2)  # fmt: skip
        # The reference is sensitive to the qkv layout: q and k swapped gives other scores.
        swapped = reference(state, clip_pixels(x, 32), text.input_ids, text.attention_mask,
                            vit_heads=2, text_heads=2, qkv_order=(1, 0, 2))  # fmt: skip
    got = scorer.score(x, PROMPTS)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert (got - swapped).abs().max() > 1e-3


def test_safetensors_checkpoint_loads_the_same(files, state, scorer, tmp_path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "ImageReward.safetensors")
    _, med_config, tokenizer = files
    other = get_scorer(
        "imagereward", path=tmp_path / "ImageReward.safetensors", med_config=med_config,
        tokenizer=tokenizer,
    )  # fmt: skip
    x = images(3)
    torch.testing.assert_close(other.score(x, PROMPTS[:3]), scorer.score(x, PROMPTS[:3]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"holds no ImageReward\.pt"):
        get_scorer("imagereward", path=tmp_path / "empty")  # before the default tokenizer
