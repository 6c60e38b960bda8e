"""Re-Align's image retrieval embeds each image on its own, also for processors that read a
flat image list as one prompt's images (Idefics3 / SmolVLM): one embedding per image, so the
retrieved index points at the right pool image (it gave one embedding per batch and crashed)."""

from __future__ import annotations

import torch
from vlm_helpers import random_images

from mmalign.vlm.load import VLM
from mmalign.vlm.realign_embed import ImageIndex, VisionEncoderEmbedder
from mmalign.vlm.tiny import make_tokenizer

TEMPLATE = (
    "<|begin_of_text|>{% for m in messages %}{{ m['role'] | capitalize }}: "
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}"
    "{% else %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def tiny_idefics3(size: int = 32):
    """A random Idefics3 (per-prompt pixel layout, image splitting into crops)."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
    )

    special = ["<|begin_of_text|>", "<end_of_utterance>", "<pad>", "<fake_token_around_image>",
               "<image>", "<global-img>"] + [f"<row_{i}_col_{j}>" for i in range(1, 7)
                                             for j in range(1, 7)]  # fmt: skip
    tok = make_tokenizer(special, bos="<|begin_of_text|>", eos="<end_of_utterance>", pad="<pad>")
    tok.add_special_tokens({"additional_special_tokens": special[3:]})
    patch, scale = 8, 2
    config = Idefics3Config(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": size, "patch_size": patch},
        text_config={"model_type": "llama", "vocab_size": len(tok), "hidden_size": 32,
                     "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "pad_token_id": tok.pad_token_id,
                     "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id},
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=scale,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config).eval()
    images = Idefics3ImageProcessor(size={"longest_edge": 2 * size},
                                    max_image_size={"longest_edge": size})  # fmt: skip
    processor = Idefics3Processor(image_processor=images, tokenizer=tok,
                                  image_seq_len=(size // patch) ** 2 // scale**2,
                                  chat_template=TEMPLATE)  # fmt: skip
    return VLM(model, processor, "tiny-idefics3")


def test_one_embedding_per_image_for_a_per_prompt_processor():
    vlm = tiny_idefics3()
    images = random_images(4)
    embedder = VisionEncoderEmbedder(vlm, batch_size=3)
    together = embedder.embed(images)
    assert together.shape[0] == 4
    alone = torch.cat([embedder.embed([im]) for im in images])
    assert torch.allclose(together, alone, atol=1e-5)
    index = ImageIndex(embedder, images)
    found = index.search(images[:2], k=2)
    assert [len(f) for f in found] == [2, 2] and 0 not in found[0] and 1 not in found[1]
