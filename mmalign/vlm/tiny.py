"""Tiny random LLaVA, LLaVA-OneVision and Qwen2-VL models with their processors, built from
config.

They exist for tests and benchmarks: the same classes as llava-hf/llava-1.5-7b-hf,
llava-hf/llava-onevision-qwen2-7b-ov-hf and Qwen/Qwen2-VL-2B-Instruct at a few hundred thousand
parameters, saved with `save_pretrained` so that they load back through `load_vlm` exactly like
the real checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() + ': ' }}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ ' ' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
QWEN_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# llava-hf/llava-onevision-qwen2-*-ov-hf's chat_template.json: a turn's images first (side by
# side, nothing between them), then each text part on its own line; the assistant turn opens
# with "assistant " where the generation prompt writes "assistant\n"
ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\n' + content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ '\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = (
    "what color is the shape ? is there a red circle ? describe the image . the picture shows "
    "a blue square on a green background with a yellow triangle and a white star . yes no "
    "i cannot help with that request . red green blue yellow white black circle square "
    "triangle star background shape answer question user assistant system"
)


def make_tokenizer(special: Sequence[str], *, bos: str | None, eos: str, pad: str,
                   vocab_size: int = 300):  # fmt: skip
    """A byte-level BPE fast tokenizer trained on a small corpus, with `special` tokens."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from ..toy.models.vlm import byte_level_bpe

    tok = byte_level_bpe([CORPUS] * 4, special, vocab_size)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, special.index(bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, model_max_length=1024
    )


def tiny_llava(out_dir: str | Path | None = None, *, seed: int = 0, image_size: int = 32):
    """(model, processor) of a random LlavaForConditionalGeneration; saved when `out_dir`."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tok = make_tokenizer(["<s>", "</s>", "<pad>", "<image>"], bos="<s>", eos="</s>", pad="<pad>")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    patch = 8
    vision = CLIPVisionConfig(
        image_size=image_size, patch_size=patch, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, projection_dim=32,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=(image_size // patch) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    _generation_defaults(model, tok)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        ),
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    return _maybe_save(model, processor, out_dir)


def tiny_qwen2vl(out_dir: str | Path | None = None, *, seed: int = 0, image_size: int = 56):
    """(model, processor) of a random Qwen2VLForConditionalGeneration (M-RoPE, dynamic image
    grid: a 56x56 image is 4x4 patches of 14, merged 2x2 into 4 image tokens)."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
               "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
    tok = make_tokenizer(special, bos=None, eos="<|im_end|>", pad="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": special[1:]})
    ids = {t: tok.convert_tokens_to_ids(t) for t in special}
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "max_position_embeddings": 512, "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"], "bos_token_id": None,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3],
                                "rope_theta": 10000.0},
        },
        vision_config={
            "depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2,
            "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    _generation_defaults(model, tok)
    pixels = image_size * image_size
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN_TEMPLATE,
    )
    return _maybe_save(model, processor, out_dir)


def tiny_llava_onevision(out_dir: str | Path | None = None, *, seed: int = 0,
                         image_size: int = 16):  # fmt: skip
    """(model, processor) of a random LlavaOnevisionForConditionalGeneration: a SigLIP tower
    (no CLS token, `full` features) and a Qwen2 language model. A lone image is tiled anyres:
    resized to the best of `image_grid_pinpoints` (1x1 to 2x2 tiles of `image_size`), its
    tiles' features unpadded to the image's aspect ratio with an `image_newline` after each
    row, after the base tile's ((image_size / 4)^2 tokens a tile, 16 by default): its token
    count depends on its size. An image among several in a prompt is its base tile and one
    `image_newline` (17 tokens by default). The chat template is the hub's
    (`ONEVISION_TEMPLATE`)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
    tok = make_tokenizer(special, bos=None, eos="<|im_end|>", pad="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": special[1:]})
    patch = 4
    vision = SiglipVisionConfig(
        image_size=image_size, patch_size=patch, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, vision_use_head=False,
    )  # fmt: skip
    text = Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
    )  # fmt: skip
    pinpoints = [[image_size * h, image_size * w] for h in (1, 2) for w in (1, 2)]
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
        vision_aspect_ratio="anyres_max_9",
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    _generation_defaults(model, tok)
    image_processor = LlavaOnevisionImageProcessor(
        size={"height": image_size, "width": image_size}, image_grid_pinpoints=pinpoints,
        image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )  # fmt: skip
    processor = LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=LlavaOnevisionVideoProcessor(),
        num_image_tokens=(image_size // patch) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=ONEVISION_TEMPLATE,
    )
    return _maybe_save(model, processor, out_dir)


def _generation_defaults(model, tok) -> None:
    gen = model.generation_config
    gen.eos_token_id, gen.pad_token_id = tok.eos_token_id, tok.pad_token_id
    gen.bos_token_id, gen.do_sample, gen.max_new_tokens = tok.bos_token_id, False, 8


def _maybe_save(model, processor, out_dir: str | Path | None):
    if out_dir is not None:
        model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
    return model, processor
