"""ImageReward's network (Xu et al. 2023, "ImageReward: Learning and Evaluating Human
Preferences for Text-to-Image Generation") rebuilt on transformers' BLIP classes, and the
released checkpoint's keys renamed to it.

BLIP's ViT-L/16 image encoder (224 px, `BlipVisionModel`) and BERT-base "med" text encoder
cross-attending to the image (`BlipTextModel` with cross-attention and no pooler), with an MLP
head 768-1024-128-64-16-1 on the text [CLS] feature (METHODS.md section 4). `ImageReward.pt`
is a plain state dict of the `image-reward` package's `ImageReward` module: `convert_state_dict`
renames its keys to `ImageRewardModel`'s, and `ImageRewardModel.from_state_dict` builds the
model from the sizes the checkpoint's tensors give. The scorer around it (tokenizer, files,
normalisation) is imagereward.py.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .common import RewardMLP

# BLIP's med_config.json (BERT-base with cross-attention in every layer). `encoder_width` is
# replaced by the ViT's width (1024 for ViT-L), as the package's BLIP_Pretrain does.
MED_CONFIG: dict[str, Any] = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30524,
    "encoder_width": 768,
    "add_cross_attention": True,
}
VIT_HEAD_DIM = 64  # BLIP's ViT-B (768 / 12) and ViT-L (1024 / 16)
VIT_LAYER_NORM_EPS = 1e-6  # timm's ViT norm_layer in BLIP's vit.py
HEAD_LINEAR = (0, 2, 4, 6, 7)  # mlp.layers indices of the Linear layers (Dropout at 1, 3, 5)

# (checkpoint name, transformers module name) prefixes; "{}" is a layer index.
RENAMES: tuple[tuple[str, str], ...] = (
    ("blip.visual_encoder.cls_token", "vision.embeddings.class_embedding"),
    ("blip.visual_encoder.pos_embed", "vision.embeddings.position_embedding"),
    ("blip.visual_encoder.patch_embed.proj.", "vision.embeddings.patch_embedding."),
    ("blip.visual_encoder.blocks.{}.norm1.", "vision.encoder.layers.{}.layer_norm1."),
    ("blip.visual_encoder.blocks.{}.attn.qkv.", "vision.encoder.layers.{}.self_attn.qkv."),
    ("blip.visual_encoder.blocks.{}.attn.proj.", "vision.encoder.layers.{}.self_attn.projection."),
    ("blip.visual_encoder.blocks.{}.norm2.", "vision.encoder.layers.{}.layer_norm2."),
    ("blip.visual_encoder.blocks.{}.mlp.fc1.", "vision.encoder.layers.{}.mlp.fc1."),
    ("blip.visual_encoder.blocks.{}.mlp.fc2.", "vision.encoder.layers.{}.mlp.fc2."),
    ("blip.visual_encoder.norm.", "vision.post_layernorm."),
    # BLIP's med BertModel and transformers' BlipTextModel share their submodule names.
    ("blip.text_encoder.embeddings.word_embeddings.", "text.embeddings.word_embeddings."),
    ("blip.text_encoder.embeddings.position_embeddings.", "text.embeddings.position_embeddings."),
    ("blip.text_encoder.embeddings.LayerNorm.", "text.embeddings.LayerNorm."),
    ("blip.text_encoder.encoder.layer.", "text.encoder.layer."),
    ("mlp.layers.", "mlp.layers."),
)
# In the checkpoint, not used by `score`: the contrastive projections of BLIP_Pretrain and the
# med embeddings' position_ids buffer (an arange, persistent in the transformers of 2023).
IGNORED: tuple[str, ...] = (
    "blip.vision_proj.weight",
    "blip.vision_proj.bias",
    "blip.text_proj.weight",
    "blip.text_proj.bias",
    "blip.text_encoder.embeddings.position_ids",
)


def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\})", template)
    return re.compile("".join(r"(\d+)" if p == "{}" else re.escape(p) for p in parts))


_FORWARD = [(_pattern(a), b) for a, b in RENAMES]
_BACKWARD = [(_pattern(b), a) for a, b in RENAMES]


def _rename(key: str, rules) -> str | None:
    for pattern, template in rules:
        m = pattern.match(key)
        if m:
            return template.format(*m.groups()) + key[m.end() :]
    return None


def checkpoint_name(module_key: str) -> str:
    """The checkpoint key a transformers-module key is loaded from (for error messages)."""
    return _rename(module_key, _BACKWARD) or module_key


def convert_state_dict(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the checkpoint renamed to `ImageRewardModel`'s keys, the ignored checkpoint keys).
    A key that is neither renamed nor in `IGNORED` raises a ValueError naming it."""
    out, ignored, unknown = {}, [], []
    for key, value in state.items():
        if key in IGNORED:
            ignored.append(key)
            continue
        new = _rename(key, _FORWARD)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise ValueError(f"unexpected keys in the ImageReward checkpoint: {_few(unknown)}")
    return out, ignored


def _few(keys: Sequence[str], n: int = 8) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _need(state: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise ValueError(f"the ImageReward checkpoint has no {key}")
    return state[key]


def vision_config(state: Mapping[str, torch.Tensor]):
    """BLIP's timm ViT as a `BlipVisionConfig`, sizes read from the checkpoint's tensors
    (ViT-L/16 at 224 for the real file: width 1024, 24 blocks, MLP 4096, 16 heads of 64)."""
    from transformers import BlipVisionConfig

    p = "blip.visual_encoder."
    width = _need(state, p + "cls_token").shape[-1]
    patch = _need(state, p + "patch_embed.proj.weight").shape[-1]
    n_pos = _need(state, p + "pos_embed").shape[1] - 1
    grid = math.isqrt(n_pos)
    if grid * grid != n_pos:
        raise ValueError(f"{p}pos_embed has {n_pos} patch positions, not a square grid")
    blocks = {int(k.split(".")[3]) for k in state if k.startswith(p + "blocks.")}
    if blocks != set(range(len(blocks))) or not blocks:
        raise ValueError(f"the ImageReward checkpoint's ViT blocks are {sorted(blocks)}")
    if width % VIT_HEAD_DIM:
        raise ValueError(f"ViT width {width} is not a multiple of the {VIT_HEAD_DIM}-d heads")
    return BlipVisionConfig(
        hidden_size=width,
        intermediate_size=_need(state, p + "blocks.0.mlp.fc1.weight").shape[0],
        num_hidden_layers=len(blocks),
        num_attention_heads=width // VIT_HEAD_DIM,
        image_size=grid * patch,
        patch_size=patch,
        hidden_act="gelu",  # nn.GELU (erf) in timm's Mlp
        layer_norm_eps=VIT_LAYER_NORM_EPS,
        attention_dropout=0.0,
        attn_implementation="eager",
    )


def med_config_dict(med_config: str | Path | Mapping[str, Any] | None) -> dict[str, Any]:
    """The med (BERT) config: BLIP's own by default, else a JSON file or a mapping with the
    same field names."""
    if med_config is None:
        return dict(MED_CONFIG)
    if isinstance(med_config, Mapping):
        return dict(med_config)
    return json.loads(Path(med_config).read_text())


def text_config(med: Mapping[str, Any], encoder_width: int):
    """The med config as a `BlipTextConfig` with cross-attention to `encoder_width`-d image
    tokens in every layer (`is_decoder` only builds those layers; the forward is bidirectional)."""
    from transformers import BlipTextConfig

    if not med.get("add_cross_attention", True):
        raise ValueError("ImageReward's text encoder needs add_cross_attention: true")
    if med.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("ImageReward's med config uses absolute position embeddings")
    return BlipTextConfig(
        vocab_size=med["vocab_size"],
        hidden_size=med["hidden_size"],
        encoder_hidden_size=encoder_width,
        intermediate_size=med["intermediate_size"],
        num_hidden_layers=med["num_hidden_layers"],
        num_attention_heads=med["num_attention_heads"],
        max_position_embeddings=med["max_position_embeddings"],
        hidden_act=med.get("hidden_act", "gelu"),
        layer_norm_eps=med.get("layer_norm_eps", 1e-12),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=med.get("pad_token_id", 0),
        bos_token_id=None,
        eos_token_id=None,
        sep_token_id=None,
        is_decoder=True,
        use_cache=False,
        attn_implementation="eager",
    )


class ImageRewardModel(nn.Module):
    """`vision` (BlipVisionModel), `text` (BlipTextModel, no pooler), `mlp` (the head).
    `forward` gives the raw reward [B] (before the z-normalisation)."""

    def __init__(self, vision_cfg, text_cfg, head_sizes: Sequence[int]) -> None:
        from transformers import BlipVisionModel
        from transformers.models.blip.modeling_blip_text import BlipTextModel

        super().__init__()
        self.vision = BlipVisionModel(vision_cfg)
        self.text = BlipTextModel(text_cfg, add_pooling_layer=False)
        self.mlp = RewardMLP(head_sizes)

    def features(
        self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """The text [CLS] feature after cross-attending to every image token."""
        image = self.vision(pixel_values=pixels).last_hidden_state  # after BLIP's final norm
        image_mask = torch.ones(image.shape[:2], dtype=torch.long, device=image.device)
        out = self.text(
            input_ids=input_ids, attention_mask=attention_mask,
            encoder_hidden_states=image, encoder_attention_mask=image_mask,
        )  # fmt: skip
        return out.last_hidden_state[:, 0, :]

    def forward(
        self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        feats = self.features(pixels, input_ids, attention_mask)
        # The package runs the head on float32 features; the scorer keeps the head in float32.
        return self.mlp(feats.to(self.mlp.layers[0].weight.dtype)).squeeze(-1)

    @classmethod
    def from_state_dict(
        cls,
        state: Mapping[str, torch.Tensor],
        med_config: str | Path | Mapping[str, Any] | None = None,
    ) -> ImageRewardModel:
        """The model built from the checkpoint's sizes and `med_config`, every needed key
        loaded (a missing one raises naming its checkpoint key)."""
        converted, _ = convert_state_dict(state)
        vcfg = vision_config(state)
        tcfg = text_config(med_config_dict(med_config), vcfg.hidden_size)
        head = [_need(state, "mlp.layers.0.weight").shape[1]]
        head += [_need(state, f"mlp.layers.{i}.weight").shape[0] for i in HEAD_LINEAR]
        with torch.device("meta"):
            model = cls(vcfg, tcfg, head)
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        expected = set(shapes)
        missing = sorted(checkpoint_name(k) for k in expected - set(converted))
        if missing:
            raise ValueError(f"the ImageReward checkpoint lacks {_few(missing)}")
        extra = sorted(checkpoint_name(k) for k in set(converted) - expected)
        if extra:
            raise ValueError(f"unexpected keys in the ImageReward checkpoint: {_few(extra)}")
        for key in sorted(expected):
            want, got = shapes[key], converted[key].shape
            if want != got:
                raise ValueError(
                    f"{checkpoint_name(key)} has shape {tuple(got)}, the model built from the "
                    f"checkpoint and med config expects {tuple(want)}"
                )
        model.load_state_dict(converted, strict=True, assign=True)
        # Non-persistent buffers are not in the state dict: rebuild them off the meta device.
        text_emb = model.text.embeddings
        text_emb.position_ids = torch.arange(tcfg.max_position_embeddings).expand((1, -1))
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left:
            raise RuntimeError(f"ImageRewardModel: {left} were not loaded")
        return model.eval()
