"""toy-sd: the tokenizer, the resumable build, and the shipped model's quality."""

from __future__ import annotations

import pytest
import torch

from mmalign.toy.models import sd
from mmalign.toy.models.clip_tokenizer import save_clip_tokenizer
from mmalign.toy.paths import model_path
from mmalign.toy.world import sample_prompts


def test_clip_tokenizer_spells_every_toy_word_as_one_token(tmp_path):
    from transformers import CLIPTokenizer

    words = sd.toy_words()
    save_clip_tokenizer(words, tmp_path, max_length=24)
    tok = CLIPTokenizer.from_pretrained(tmp_path)
    for word in words:
        assert len(tok(word).input_ids) == 3, word  # BOS, the word, EOS
    ids = tok("a small red circle on the left on a blue background").input_ids
    assert tok.decode(ids, skip_special_tokens=True) == (
        "a small red circle on the left on a blue background"
    )
    # Text outside the toy grammar still tokenizes (byte fallback; CLIP splits digits).
    assert tok.decode(tok("zebra 42!").input_ids, skip_special_tokens=True) == "zebra 4 2 !"


def test_loss_weights_match_their_formulas():
    snr = torch.tensor([0.01, 0.5, 4.0, 100.0])
    torch.testing.assert_close(sd.loss_weights(snr, "v", 5.0), torch.ones(4))
    # min-SNR-5 in v form: min(snr, 5) / (snr + 1); tiny at high noise (snr -> 0).
    torch.testing.assert_close(
        sd.loss_weights(snr, "min_snr", 5.0), torch.tensor([0.01 / 1.01, 0.5 / 1.5, 0.8, 5 / 101])
    )
    # Capped v: plain v-MSE until snr + 1 exceeds gamma, then gamma / (snr + 1).
    torch.testing.assert_close(
        sd.loss_weights(snr, "v_capped", 5.0), torch.tensor([1.0, 1.0, 1.0, 5 / 101])
    )
    with pytest.raises(ValueError, match="unknown loss_weight 'snr'; valid: v, v_capped"):
        sd.loss_weights(snr, "snr", 5.0)


def _tiny(tmp_path, unet_steps: int, **overrides):
    settings = sd.ToySDSettings(num_images=64, unet_batch=8, unet_steps=unet_steps,
                                checkpoint_every=100, **overrides)  # fmt: skip
    tok_dir = save_clip_tokenizer(sd.toy_words(), tmp_path / "tok", sd.TEXT_MAX_LENGTH)
    tokenizer, text_encoder, _vae, unet, scheduler = sd.build_models(0, tok_dir)
    prompts = [p.text for p in sample_prompts(64, "train", 0)]
    g = torch.Generator().manual_seed(0)
    mean, std = torch.randn(64, 4, 8, 8, generator=g), torch.rand(64, 4, 8, 8, generator=g)
    args = (unet, text_encoder, tokenizer, scheduler, prompts, mean, std, 1.0, settings)
    return args, unet


def test_unet_training_resumes_exactly(tmp_path):
    args, straight = _tiny(tmp_path / "a", unet_steps=4)
    sd.train_unet(*args, work=tmp_path / "a", progress=False)
    args, resumed = _tiny(tmp_path / "b", unet_steps=4)
    sd.train_unet(*args, work=tmp_path / "b", progress=False, stop_after=2)  # "interrupted"
    args, resumed = _tiny(tmp_path / "b", unet_steps=4)  # a fresh process: random init again
    sd.train_unet(*args, work=tmp_path / "b", progress=False)
    for (name, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_a_checkpoint_from_other_settings_is_not_resumed(tmp_path):
    args, _ = _tiny(tmp_path, unet_steps=4)
    sd.train_unet(*args, work=tmp_path, progress=False, stop_after=2)
    # Evaluation settings may change between runs; the loss weighting may not.
    args, _ = _tiny(tmp_path, unet_steps=4, eval_prompts=10)
    sd.train_unet(*args, work=tmp_path, progress=False, stop_after=3)
    args, _ = _tiny(tmp_path, unet_steps=4, loss_weight="min_snr")
    with pytest.raises(ValueError, match="written by different toy-sd settings"):
        sd.train_unet(*args, work=tmp_path, progress=False)
    assert sd.ToySDSettings().fingerprint("vae") == sd.ToySDSettings(unet_lr=1).fingerprint("vae")
    assert sd.ToySDSettings().fingerprint("unet") != sd.ToySDSettings(vae_lr=1).fingerprint("unet")


@pytest.fixture(scope="module")
def shipped():
    try:
        return sd.load_pipeline(model_path("sd"))
    except FileNotFoundError as err:
        pytest.skip(str(err))


def test_shipped_toy_sd_loads_like_sd15(shipped):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model_path("sd"), safety_checker=None)
    assert type(pipe.unet).__name__ == "UNet2DConditionModel"
    assert type(pipe.vae).__name__ == "AutoencoderKL"
    assert type(pipe.text_encoder).__name__ == "CLIPTextModel"
    assert type(pipe.tokenizer).__name__ == "CLIPTokenizer"


def test_shipped_toy_sd_follows_heldout_prompts(shipped):
    """The model card's figure uses 200 prompts; 40 here keep the test short."""
    from mmalign.toy.rewards import fidelity

    prompts = [p.text for p in sample_prompts(40, "heldout", 1234)]
    images = sd.sample(shipped, prompts, seed=1234)
    assert images.shape == (40, 3, 32, 32)
    assert float(fidelity(images, prompts).mean()) >= 0.75  # the bar (200: in the card)


def test_shipped_toy_models_fit_the_package_budget():
    """The toy models ship as package data: 30 MB together at most."""
    root = model_path("sd").parent
    weights = list(root.rglob("*.safetensors"))
    assert weights, "a shipped toy model must be in safetensors"
    assert not list(root.rglob("*.bin")) and not list(root.rglob("*.pt"))
    assert sum(f.stat().st_size for f in weights) <= 30 * 2**20
