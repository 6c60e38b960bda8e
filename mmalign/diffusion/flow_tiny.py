"""Tiny random SD3 and FLUX pipelines built from config, for tests and benchmarks.

Both use the real diffusers classes (`StableDiffusion3Pipeline` / `FluxPipeline`,
`SD3Transformer2DModel` / `FluxTransformer2DModel`, `FlowMatchEulerDiscreteScheduler`) at 32 px
with a 2-level VAE (16x16 latents) and need no download: every tokenizer is the toy world's CLIP
BPE tokenizer shipped with toy-sd, including the one in front of the tiny T5 encoder (a T5
encoder reads token ids; which BPE made them does not change the architecture under test).
"""

from __future__ import annotations

import torch

from .load import _tiny_text_encoder, _toy_tokenizer

T5_DIM = 64  # SD3 pads the two CLIP encoders' 32 + 32 features up to the T5 width


def _tiny_t5(tokenizer, seed: int, d_model: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_ff=48,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,  # built in train mode: dropout would make two runs differ
        pad_token_id=tokenizer.pad_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return T5EncoderModel(config)


def _tiny_flow_vae(seed: int):
    """A 2-level AutoencoderKL with SD3's latent shift and scale (`(z - shift) * scale`)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
        scaling_factor=1.5305,
        shift_factor=0.0609,
    )


def tiny_sd3_pipeline(seed: int = 0, *, t5: bool = True):
    """A random SD3-architecture pipeline: two CLIP encoders with projection, a T5 encoder
    (`t5=False`: none, as SD3 allows), an MMDiT of 2 joint blocks, shift-3 flow scheduler."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    tokenizer = _toy_tokenizer()
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=T5_DIM,
        caption_projection_dim=32,  # = heads * head dim
        pooled_projection_dim=64,  # the two CLIP projections side by side
        pos_embed_max_size=16,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_tiny_flow_vae(seed + 1),
        text_encoder=_tiny_text_encoder(tokenizer, seed + 2, projection=True),
        tokenizer=tokenizer,
        text_encoder_2=_tiny_text_encoder(tokenizer, seed + 3, projection=True),
        tokenizer_2=tokenizer,
        text_encoder_3=_tiny_t5(tokenizer, seed + 4, T5_DIM) if t5 else None,
        tokenizer_3=tokenizer if t5 else None,
    )


def tiny_flux_pipeline(seed: int = 0, *, guidance_embeds: bool = True):
    """A random FLUX.1-architecture pipeline: CLIP (pooled) + T5 (sequence), one double and
    one single block, 2x2-packed latents, RoPE ids, the dev model's guidance embedding
    (`guidance_embeds=False`: schnell's), and FLUX's resolution-dependent shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tokenizer = _toy_tokenizer()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels x the 2x2 packing
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6),  # sums to the head dim
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )  # fmt: skip
    return FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=_tiny_flow_vae(seed + 1),
        text_encoder=_tiny_text_encoder(tokenizer, seed + 2),
        tokenizer=tokenizer,
        text_encoder_2=_tiny_t5(tokenizer, seed + 3, 32),
        tokenizer_2=tokenizer,
    )
