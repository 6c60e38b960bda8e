"""toy-flow's components: SD3's classes at toy sizes. The tokenizer and both CLIP encoders'
starting weights come from the shipped toy-sd; the VAE and the MMDiT start from random init.

The VAE is toy-sd's architecture trained longer for toy-flow: toy-sd's own VAE reads back the
shape of only 86% of perfect held-out renders (61% of the small ones), a ceiling toy-flow's
shape check had reached (0.845); `vae_channels` can be SD3's 16, which the MMDiT learns more
slowly (docs/results.md). Starting the two CLIP encoders from toy-sd's text encoder gives the
transformer captions that already separate the toy words. SD3 has no T5 here
(`text_encoder_3=None`, as SD3 allows): the pipeline then feeds zeros in T5's place, as many
as `max_sequence_length`; toy-flow is trained and sampled with the CLIP tokenizer's length
(`flow_load.default_max_sequence`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..sd.model import toy_vae

IMAGE_SIZE = 32
LATENT_SIZE = 16
CLIP_WIDTH = 64  # toy-sd's text encoder
JOINT_DIM = 2 * CLIP_WIDTH  # the two CLIP encoders' features side by side (SD3's layout)


def _clip_with_projection(toy_sd: Path, seed: int):
    """toy-sd's CLIP text encoder with a new (random) text projection for the pooled vector."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    source = CLIPTextModel.from_pretrained(toy_sd / "text_encoder")
    config = source.config
    config.projection_dim = CLIP_WIDTH
    torch.manual_seed(seed)
    encoder = CLIPTextModelWithProjection(config)
    encoder.text_model.load_state_dict(source.state_dict())
    return encoder


def build_models(
    seed: int, toy_sd: Path, *, layers: int = 6, width: int = 128, heads: int = 4,
    vae_channels: int = 4,
):  # fmt: skip
    """(tokenizer, text_encoder, text_encoder_2, vae, transformer, scheduler) for toy-flow; the
    VAE and the transformer are untrained."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(toy_sd / "tokenizer")
    text_encoder = _clip_with_projection(toy_sd, seed + 1)
    text_encoder_2 = _clip_with_projection(toy_sd, seed + 2)
    torch.manual_seed(seed + 3)
    vae = toy_vae(vae_channels)
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=LATENT_SIZE,
        patch_size=2,  # 8x8 image tokens
        in_channels=vae_channels,
        out_channels=vae_channels,
        num_layers=layers,
        attention_head_dim=width // heads,
        num_attention_heads=heads,
        joint_attention_dim=JOINT_DIM,
        caption_projection_dim=width,
        pooled_projection_dim=JOINT_DIM,
        pos_embed_max_size=LATENT_SIZE // 2,
        qk_norm="rms_norm",  # SD3.5's: keeps attention logits bounded at a high learning rate
    )
    # shift 1: SD3's shift 3 moves sampling towards high noise for 1024 px images; at 16x16
    # latents an image is already destroyed at moderate noise.
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    return tokenizer, text_encoder, text_encoder_2, vae, transformer, scheduler


def encode_text(text_encoder, text_encoder_2, ids: torch.Tensor, zeros: int):
    """SD3's conditioning from token ids, with gradients (the pipeline's `encode_prompt` runs
    without): each CLIP's penultimate hidden states side by side, then `zeros` T5-width zero
    tokens in T5's place; pooled = both projections side by side."""
    hidden, pooled = [], []
    for encoder in (text_encoder, text_encoder_2):
        out = encoder(ids, output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled.append(out.text_embeds)
    embeds = torch.cat(hidden, dim=-1)
    pad = embeds.new_zeros(embeds.shape[0], zeros, embeds.shape[-1])
    return torch.cat([embeds, pad], dim=1), torch.cat(pooled, dim=-1)
