"""toy-flow: the resumable rectified-flow stage, SD3 without T5, and the shipped model."""

from __future__ import annotations

import pytest
import torch

from mmalign.toy.models import flow
from mmalign.toy.models.sd import TEXT_MAX_LENGTH
from mmalign.toy.paths import model_path
from mmalign.toy.world import sample_prompts


def _tiny(steps: int, **overrides):
    settings = flow.ToyFlowSettings(num_images=32, layers=1, width=32, batch=4, steps=steps,
                                    warmup=2, checkpoint_every=100, **overrides)  # fmt: skip
    tokenizer, te1, te2, _vae, transformer, _scheduler = flow.build_models(
        0, model_path("sd"), layers=1, width=32
    )
    prompts = [p.text for p in sample_prompts(32, "train", 0)]
    g = torch.Generator().manual_seed(0)
    mean, std = torch.randn(32, 4, 16, 16, generator=g), torch.rand(32, 4, 16, 16, generator=g)
    args = (transformer, te1, te2, tokenizer, prompts, mean, std, 0.1, 1.2, settings)
    return args, (transformer, te1, te2)


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=name)


def test_transformer_training_resumes_exactly(tmp_path):
    args, straight = _tiny(steps=4)
    flow.train_transformer(*args, work=tmp_path / "a", progress=False)
    args, _ = _tiny(steps=4)
    flow.train_transformer(*args, work=tmp_path / "b", progress=False, stop_after=2)
    args, resumed = _tiny(steps=4)  # a fresh process: random init again
    flow.train_transformer(*args, work=tmp_path / "b", progress=False)
    for a, b in zip(straight, resumed, strict=True):
        _assert_same(a, b)
    # the CLIP encoders train too (at their own learning rate), starting from toy-sd's
    _, (_, fresh, _) = _tiny(steps=4)
    pairs = zip(fresh.parameters(), straight[1].parameters(), strict=True)
    assert any(not torch.equal(x, y) for x, y in pairs)


def test_a_checkpoint_from_other_settings_is_not_resumed(tmp_path):
    args, _ = _tiny(steps=4)
    flow.train_transformer(*args, work=tmp_path, progress=False, stop_after=2)
    args, _ = _tiny(steps=4, eval_prompts=10)  # evaluation settings may change
    flow.train_transformer(*args, work=tmp_path, progress=False, stop_after=3)
    args, _ = _tiny(steps=4, logit_std=0.5)
    with pytest.raises(ValueError, match="written by different toy-flow settings"):
        flow.train_transformer(*args, work=tmp_path, progress=False)


def test_sigmas_follow_sd3s_logit_normal():
    settings = flow.ToyFlowSettings(logit_mean=0.5, logit_std=0.7)
    sigmas = flow.sample_sigmas(20000, settings, torch.Generator().manual_seed(0))
    logits = torch.logit(sigmas)
    assert 0 < float(sigmas.min()) and float(sigmas.max()) < 1
    assert abs(float(logits.mean()) - 0.5) < 0.02 and abs(float(logits.std()) - 0.7) < 0.02


def test_training_conditioning_is_what_the_pipeline_samples_with():
    """`encode_text` (with gradients, for training) gives the stock SD3 pipeline's own
    `encode_prompt` output without T5, the empty caption included (classifier-free guidance's
    negative), so toy-flow trains on the conditioning it is sampled with."""
    from diffusers import StableDiffusion3Pipeline

    tokenizer, te1, te2, vae, transformer, scheduler = flow.build_models(
        0, model_path("sd"), layers=1, width=32
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=te1,
        tokenizer=tokenizer, text_encoder_2=te2, tokenizer_2=tokenizer, text_encoder_3=None,
        tokenizer_3=None,
    )  # fmt: skip
    prompts = ["a small red circle on the left on a blue background", ""]
    ids = tokenizer(prompts, padding="max_length", max_length=TEXT_MAX_LENGTH,
                    return_tensors="pt").input_ids  # fmt: skip
    embeds, pooled = flow.encode_text(te1, te2, ids, zeros=TEXT_MAX_LENGTH)
    with torch.no_grad():
        want, _, want_pooled, _ = pipe.encode_prompt(
            prompts, None, None, do_classifier_free_guidance=False,
            max_sequence_length=TEXT_MAX_LENGTH,
        )  # fmt: skip
    assert embeds.shape == (2, 2 * TEXT_MAX_LENGTH, 128) and pooled.shape == (2, 128)
    torch.testing.assert_close(embeds, want)
    torch.testing.assert_close(pooled, want_pooled)
    assert torch.equal(embeds[:, TEXT_MAX_LENGTH:], torch.zeros(2, TEXT_MAX_LENGTH, 128))


@pytest.mark.parametrize("channels", [4, 16])
def test_a_tiny_build_saves_a_loadable_pipeline_with_its_card(tmp_path, channels):
    """The whole builder at toy sizes: its VAE trained and the latents cached, the MMDiT
    trained, an SD3 folder with no T5 that mmalign's flow loader reads, its metrics (the
    prompt-following check included) and card; a second run resumes (no steps)."""
    from diffusers import AutoencoderKL

    from mmalign.diffusion.flow_load import load_flow_pipeline

    settings = flow.ToyFlowSettings(num_images=16, layers=1, width=32, batch=2, steps=2,
                                    warmup=1, eval_prompts=2, eval_steps=2, vae_steps=2,
                                    vae_batch=2, vae_channels=channels)  # fmt: skip
    metrics = flow.build_toy_flow(tmp_path / "out", tmp_path / "work", model_path("sd"),
                                  settings, progress=False)  # fmt: skip
    assert metrics["n"] == 2 and 0 <= metrics["heldout_fidelity_mean"] <= 1
    assert (tmp_path / "work" / "latents.safetensors").is_file()
    assert (tmp_path / "work" / "vae.safetensors").is_file()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "2 AdamW steps" in card and "text_encoder_3=None" in card
    assert "Prompt-following check" in card and f"16x16x{channels}" in card
    for check in ("hue", "shape", "background"):
        low, high = metrics[f"heldout_{check}_pass_ci95"]
        assert 0 <= low <= metrics[f"heldout_{check}_pass"] <= high <= 1
    model = load_flow_pipeline(tmp_path / "out")
    assert model.family == "sd3" and not model.has_t5
    assert model.pipe.vae.config.shift_factor is not None
    # toy-flow's own VAE, trained in the build (not toy-sd's), feeds the transformer
    toy_sd_vae = AutoencoderKL.from_pretrained(model_path("sd") / "vae")
    assert not torch.equal(model.pipe.vae.encoder.conv_in.weight, toy_sd_vae.encoder.conv_in.weight)
    channels = model.pipe.vae.config.latent_channels
    assert channels == settings.vae_channels == model.pipe.transformer.config.in_channels
    again = flow.build_toy_flow(tmp_path / "out2", tmp_path / "work", model_path("sd"),
                                settings, progress=False)  # fmt: skip
    assert again["heldout_fidelity_mean"] == metrics["heldout_fidelity_mean"]


@pytest.fixture(scope="module")
def shipped():
    try:
        return flow.load_pipeline(model_path("flow"))
    except FileNotFoundError as err:
        pytest.skip(str(err))


def test_shipped_toy_flow_loads_like_sd3_without_t5(shipped):
    from mmalign.diffusion.flow_load import default_max_sequence, flow_model, sampling_kwargs

    assert type(shipped).__name__ == "StableDiffusion3Pipeline"
    assert type(shipped.transformer).__name__ == "SD3Transformer2DModel"
    assert type(shipped.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert shipped.text_encoder_3 is None
    model = flow_model(shipped, str(model_path("flow")))
    assert model.family == "sd3" and not model.has_t5
    # trained with as many T5 zeros as the CLIP tokenizer has tokens; sampled so by mmalign
    assert default_max_sequence(shipped, "sd3") == TEXT_MAX_LENGTH
    assert sampling_kwargs(shipped) == {"max_sequence_length": TEXT_MAX_LENGTH}


def test_shipped_toy_flow_follows_heldout_prompts(shipped):
    """The model card's figures use 200 prompts; 40 here keep the test short. Issue 25's bar
    is the pass / fail check's hue and shape >= 0.9 (the card: 1.000 and 0.935 on 200)."""
    from mmalign.toy.rewards import fidelity_parts, prompt_checks

    prompts = [p.text for p in sample_prompts(40, "heldout", 1234)]
    images = flow.sample(shipped, prompts, seed=1234)
    assert images.shape == (40, 3, 32, 32)
    parts = fidelity_parts(images, prompts)
    fid = (parts["background"] + parts["color"] + parts["shape"]) / 3
    assert float(fid.mean()) >= 0.75  # toy-sd's bar (200 prompts: in the card)
    checks = prompt_checks(images, prompts)  # these 40: hue 1.0, shape 0.95 when written
    assert float(checks["hue"].mean()) >= 0.9 and float(checks["shape"].mean()) >= 0.9


@pytest.mark.slow
def test_flow_dpo_recipe_trains_toy_flow_on_its_own_samples(shipped, tmp_path):
    """configs/toy/flow_dpo.yaml as shipped (a few steps, 12 prompts): the pairs are toy-flow's
    own samples, the flow recipe trains, and the LoRA loads into stock toy-flow and changes it."""
    import pyarrow.parquet as pq
    from datasets import load_from_disk
    from diffusers import StableDiffusion3Pipeline

    from mmalign.config import load_config
    from mmalign.diffusion.flow_recipe import FlowRecipe, diffusion_recipe
    from mmalign.toy.cache import toy_data_folder
    from mmalign.train.config import Config
    from mmalign.train.loop import train

    cfg = load_config(Config, "configs/toy/flow_dpo.yaml", [
        "data.toy.n=12", "train.max_steps=2", "train.batch_size=2", "train.log_every=1",
        "validation.enabled=false", f"output_dir={tmp_path / 'run'}",
    ])  # fmt: skip
    made = []

    def make(c, accelerator):
        made.append(diffusion_recipe(c, accelerator))
        return made[-1]

    result = train(cfg, make)
    assert isinstance(made[0], FlowRecipe) and made[0].diffusion.family == "sd3"
    folder = toy_data_folder("pairs", cfg.data.toy, str(model_path("flow")))
    assert len(load_from_disk(str(folder / "pairs"))) > 0
    shards = list((folder / "pickapic").glob("*.parquet"))
    models = pq.read_table(shards[0], columns=["model_0", "model_1"]).to_pylist()
    assert {m for row in models for m in row.values()} == {"toy-flow"}
    prompts = ["a large red circle on a blue background"]
    before = flow.sample(shipped, prompts, seed=0, steps=4)
    pipe = StableDiffusion3Pipeline.from_pretrained(
        model_path("flow"), text_encoder_3=None, tokenizer_3=None
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(result.output_dir)
    assert (flow.sample(pipe, prompts, seed=0, steps=4) - before).abs().max() > 1e-4
