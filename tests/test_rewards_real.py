"""Real reward-model loaders, each on tiny random weights saved in the real checkpoint's file
format and key names: PickScore, HPSv2, CLIP score, aesthetic (ImageReward's tiny weights are in
test_rewards_imagereward.py; here its error without hub access); the registry's names and
arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmalign.rewards import SCORERS, get_scorer, scorer_names, split_name, tiny
from mmalign.rewards.common import clip_pixels, pad_pixels

PROMPTS = ["a red circle on a blue background", "a green square on a white background",
           "a yellow star", "a white triangle on a black background", "a blue circle"]  # fmt: skip


def images(n: int = 5, size: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size + 8, generator=torch.Generator().manual_seed(seed))


def test_registry_names_and_arguments():
    assert {"pickscore", "hpsv2", "imagereward", "clip", "aesthetic", "toy:fidelity"} <= set(
        SCORERS
    )
    assert "hpsv2:v2.0" in scorer_names() and "toy:user:warm" in scorer_names()
    assert split_name("toy:style:flat") == ("toy:style", "flat")
    assert split_name("clip:ViT-B-32:openai") == ("clip", "ViT-B-32:openai")
    assert split_name("pickscore") == ("pickscore", None)
    with pytest.raises(ValueError, match="pickscore"):
        get_scorer("pickscor")
    assert get_scorer("toy:style:flat").name == "toy:style:flat"  # toy scorers unchanged


def test_pickscore_is_scaled_cosine_and_batching_does_not_change_it(tmp_path):
    model_dir, processor_dir = tiny.save_pickscore(tmp_path)
    scorer = get_scorer("pickscore", path=model_dir, processor=processor_dir, batch_size=2)
    x = images()
    s = scorer.score(x, PROMPTS)
    assert s.shape == (5,) and s.dtype == torch.float32
    # The model's own forward: logits_per_image = logit_scale.exp() * cos, on the diagonal.
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(model_dir).eval()
    text = scorer.processor.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=clip_pixels(x, 32), **text)
    torch.testing.assert_close(s, out.logits_per_image.diagonal(), rtol=1e-4, atol=1e-4)
    assert abs(float(model.logit_scale.detach().exp()) - 1 / 0.07) < 1e-3  # CLIP's initial scale
    one_by_one = torch.cat([scorer.score(x[i : i + 1], PROMPTS[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(s, one_by_one, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="5 images but 4 prompts"):
        scorer.score(x, PROMPTS[:4])


@pytest.mark.parametrize("version", ["v2.1", "v2.0"])
def test_hpsv2_loads_the_state_dict_checkpoint_once(tmp_path, version):
    filename = {"v2.1": "HPS_v2.1_compressed.pt", "v2.0": "HPS_v2_compressed.pt"}[version]
    folder, config = tiny.save_hpsv2(tmp_path, version_file=filename, seed=3)
    scorer = get_scorer(f"hpsv2:{version}", path=folder, arch=config)
    assert scorer.name == f"hpsv2:{version}"
    saved = torch.load(folder / filename, weights_only=True)["state_dict"]
    loaded = scorer.model.state_dict()
    assert set(saved) == set(loaded)
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)  # the checkpoint, not the init
    s = scorer.score(images(), PROMPTS)
    assert s.shape == (5,) and bool((s.abs() <= 1 + 1e-5).all())  # a cosine
    with torch.no_grad():
        # HPSv2 pads the whole (non-square) image instead of CLIP's centre crop
        img = F.normalize(scorer.model.encode_image(pad_pixels(images(), 32)), dim=-1)
        txt = F.normalize(scorer.model.encode_text(scorer.tokenizer(PROMPTS)), dim=-1)
    torch.testing.assert_close(s, (img * txt).sum(-1), rtol=1e-4, atol=1e-5)


def test_hpsv2_names_a_missing_file_and_a_bad_version(tmp_path):
    folder, config = tiny.save_hpsv2(tmp_path)  # v2.1 only
    with pytest.raises(FileNotFoundError, match=r"HPS_v2_compressed\.pt"):
        get_scorer("hpsv2:v2.0", path=folder, arch=config)
    with pytest.raises(ValueError, match=r"v2\.1"):
        get_scorer("hpsv2:v2.2", path=folder, arch=config)


def test_clip_score_names_its_backbone_and_is_100_cosine(tmp_path):
    weights, config = tiny.save_openclip(tmp_path, seed=1)
    scorer = get_scorer(f"clip:{config}", path=weights)
    assert scorer.name == "clip:mmalign-tiny-clip:open_clip_model.pt"
    s = scorer.score(images(), PROMPTS)
    assert bool((s.abs() <= 100 + 1e-3).all())
    # A matching caption scores differently from a shuffled one: the text is used.
    assert not torch.allclose(s, scorer.score(images(), PROMPTS[::-1]))


def test_aesthetic_loads_the_public_key_names(tmp_path):
    mlp_file = tiny.save_aesthetic(tmp_path / "mlp", width=16, seed=2)
    state = torch.load(mlp_file, weights_only=True)
    assert sorted(state) == sorted(
        f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")
    )
    weights, config = tiny.save_openclip(tmp_path / "clip", seed=1)
    scorer = get_scorer("aesthetic", path=mlp_file, clip=f"{config}:{weights}")
    x = images()
    s = scorer.score(x, PROMPTS)
    with torch.no_grad():  # the predictor by hand: no activations between the linear layers
        h = F.normalize(scorer.model.encode_image(clip_pixels(x, 32)), dim=-1)
        for i in (0, 2, 4, 6, 7):
            h = h @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    torch.testing.assert_close(s, h.squeeze(-1), rtol=1e-4, atol=1e-5)
    assert torch.equal(s, scorer.score(x, ["ignored"] * 5))  # the prompt plays no part


def test_aesthetic_rejects_a_width_mismatch(tmp_path):
    mlp_file = tiny.save_aesthetic(tmp_path / "mlp", width=768)
    weights, config = tiny.save_openclip(tmp_path / "clip")
    with pytest.raises(ValueError, match="768-d"):
        get_scorer("aesthetic", path=mlp_file, clip=f"{config}:{weights}")


def test_imagereward_offline_hub_id_names_the_local_options(monkeypatch, tmp_path):
    # No package needed any more (tests/test_rewards_imagereward.py covers the tiny weights);
    # without hub access the default hub id fails with a message naming the local way out.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from mmalign.config import InputError

    offline = "is not in the local cache \\(offline\\): download it with `hf download"
    local = "where there is network, or give a local copy with --scorer-path imagereward"
    with pytest.raises(InputError, match=rf"bert-base-uncased {offline}.*{local}:tokenizer=DIR"):
        get_scorer("imagereward")
    bert = tiny.save_bert_tokenizer(tmp_path / "bert")
    with pytest.raises(InputError, match=rf"THUDM/ImageReward {offline}.*{local}=PATH"):
        get_scorer("imagereward", tokenizer=bert)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_scorer("imagereward", path=tmp_path / "ImageReward.pt", tokenizer=bert)


def test_mixed_size_pil_images_are_preprocessed_one_by_one(tmp_path):
    from PIL import Image

    weights, config = tiny.save_openclip(tmp_path, seed=4)
    scorer = get_scorer(f"clip:{config}", path=weights, batch_size=4)
    x = images(3)
    pil = [Image.fromarray((x[i].permute(1, 2, 0) * 255).byte().numpy()) for i in range(3)]
    pil[1] = pil[1].resize((64, 40))  # Pick-a-Pic mixes sizes within a batch
    mixed = scorer.score(pil, PROMPTS[:3])
    alone = torch.cat([scorer.score([im], [p]) for im, p in zip(pil, PROMPTS, strict=False)])
    torch.testing.assert_close(mixed, alone, rtol=1e-4, atol=1e-4)
