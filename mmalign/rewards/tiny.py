"""Tiny random reward-model checkpoints in the real files' formats, for tests and benchmarks.

Each builder writes what the real scorer downloads, with the same file names and key names:
PickScore as a transformers CLIP folder plus a processor folder, HPSv2 as
`HPS_v2.1_compressed.pt` (a dict with 'state_dict', the whole OpenCLIP model), the CLIP score
backbone as an OpenCLIP state dict, the aesthetic predictor as
`sac+logos+ava1-l14-linearMSE.pth` (layers.{0,2,4,6,7}). The OpenCLIP ones use a tiny model
config (same CLIP class as ViT-H-14 and ViT-L-14, so the same key layout) written as JSON.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import torch

TINY_OPENCLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def openclip_config(out: str | Path, name: str = "mmalign-tiny-clip") -> Path:
    """A tiny OpenCLIP model config JSON; pass its path as the scorer's `arch`."""
    path = Path(out) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(TINY_OPENCLIP, indent=2))
    return path


def _openclip_model(config: Path, seed: int):
    import open_clip

    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # "no pretrained weights loaded": random weights are the point
    try:
        return open_clip.create_model(config.stem, pretrained=None)
    finally:
        root.setLevel(level)


def save_hpsv2(out: str | Path, *, version_file: str = "HPS_v2.1_compressed.pt", seed: int = 0):
    """(folder holding the checkpoint, model config JSON)."""
    out = Path(out)
    config = openclip_config(out)
    model = _openclip_model(config, seed)
    torch.save({"state_dict": model.state_dict()}, out / version_file)
    return out, config


def save_openclip(out: str | Path, *, seed: int = 0) -> tuple[Path, Path]:
    """(state dict file `open_clip_model.pt`, model config JSON) for `clip` and `aesthetic`."""
    out = Path(out)
    config = openclip_config(out)
    model = _openclip_model(config, seed)
    path = out / "open_clip_model.pt"
    torch.save(model.state_dict(), path)
    return path, config


def save_aesthetic(out: str | Path, *, width: int = 16, seed: int = 0) -> Path:
    """The predictor's state dict with its public key names; `width` is the CLIP embedding
    size (768 in the real file; the tiny CLIP's 16 here). Written from plain tensors, not
    through mmalign's module, so a mismatch with the loader's layout would show."""
    g = torch.Generator().manual_seed(seed)
    sizes = [width, 1024, 128, 64, 16, 1]
    state = {}
    for key, (d_in, d_out) in zip((0, 2, 4, 6, 7), itertools.pairwise(sizes), strict=True):
        state[f"layers.{key}.weight"] = torch.randn(d_out, d_in, generator=g) / d_in**0.5
        state[f"layers.{key}.bias"] = torch.randn(d_out, generator=g) * 0.1
    path = Path(out) / "sac+logos+ava1-l14-linearMSE.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def save_pickscore(out: str | Path, *, seed: int = 0) -> tuple[Path, Path]:
    """(model folder, processor folder): a tiny transformers CLIPModel and a CLIPProcessor
    (the toy-sd CLIP BPE tokenizer, 32 px image processor) saved with `save_pretrained`."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from ..toy.paths import model_path

    out = Path(out)
    tokenizer = AutoTokenizer.from_pretrained(model_path("sd") / "tokenizer")
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(
        out / "processor"
    )
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    config = CLIPConfig(
        text_config={**small, "num_attention_heads": 2, "vocab_size": len(tokenizer),
                     "max_position_embeddings": 77, "eos_token_id": tokenizer.eos_token_id,
                     "bos_token_id": tokenizer.bos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={**small, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(out / "model")
    return out / "model", out / "processor"


# Words for the tiny BERT vocabulary; anything else falls back to single letters (##x pieces).
_TINY_WORDS = (
    "a an the of on in with and red green blue yellow white black circle square star "
    "triangle background photo cat dog"
).split()


def save_bert_tokenizer(out: str | Path) -> Path:
    """A tiny uncased BERT WordPiece tokenizer (special tokens, a few words, letters and
    ##letters) saved with `save_pretrained`, standing in for bert-base-uncased."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?'-")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_TINY_WORDS, *letters]
    tokens += [f"##{c}" for c in letters]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}  # ids 0..n-1
    wordpiece = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )  # fmt: skip
    wordpiece.decoder = decoders.WordPiece(prefix="##")
    tokenizer = BertTokenizerFast(
        tokenizer_object=wordpiece, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
        cls_token="[CLS]", mask_token="[MASK]", do_lower_case=True,
    )  # fmt: skip
    out = Path(out)
    tokenizer.save_pretrained(out)
    return out


TINY_MED = {  # the real med_config.json's field names, BERT-base sizes made tiny
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 32, "initializer_range": 0.02,
    "intermediate_size": 64, "layer_norm_eps": 1e-12, "max_position_embeddings": 64,
    "model_type": "bert", "num_attention_heads": 2, "num_hidden_layers": 2, "pad_token_id": 0,
    "type_vocab_size": 2, "encoder_width": 128, "add_cross_attention": True,
}  # fmt: skip
TINY_VIT = {"width": 128, "depth": 2, "mlp": 256, "patch": 16, "image": 32}  # 2 heads of 64


def save_imagereward(out: str | Path, *, seed: int = 0) -> tuple[Path, Path, Path]:
    """(folder holding `ImageReward.pt`, med config JSON, tokenizer folder). The checkpoint is
    a plain state dict with the released file's key names (`blip.visual_encoder.*` in timm's
    ViT layout, `blip.text_encoder.*` in BLIP's med BERT layout, `blip.{vision,text}_proj`,
    the position_ids buffer, `mlp.layers.{0,2,4,6,7}`), written from plain tensors rather
    than through mmalign's model, so a renaming mistake in the loader would show."""
    out = Path(out)
    tokenizer_dir = save_bert_tokenizer(out / "tokenizer")
    from transformers import AutoTokenizer

    n_vocab = len(AutoTokenizer.from_pretrained(tokenizer_dir))
    med = {**TINY_MED, "vocab_size": n_vocab + 2}  # + BLIP's [DEC] and [ENC]
    g = torch.Generator().manual_seed(seed)

    def linear(prefix: str, d_out: int, d_in: int) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.weight": torch.randn(d_out, d_in, generator=g) / d_in**0.5,
            f"{prefix}.bias": torch.randn(d_out, generator=g) * 0.1,
        }

    def norm(prefix: str, d: int) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.weight": 1 + 0.1 * torch.randn(d, generator=g),
            f"{prefix}.bias": 0.1 * torch.randn(d, generator=g),
        }

    v, w = "blip.visual_encoder", TINY_VIT["width"]
    n_patches = (TINY_VIT["image"] // TINY_VIT["patch"]) ** 2
    patch = TINY_VIT["patch"]
    state = {
        f"{v}.cls_token": 0.5 * torch.randn(1, 1, w, generator=g),
        f"{v}.pos_embed": 0.5 * torch.randn(1, n_patches + 1, w, generator=g),
        f"{v}.patch_embed.proj.weight": torch.randn(w, 3, patch, patch, generator=g) / patch,
        f"{v}.patch_embed.proj.bias": 0.1 * torch.randn(w, generator=g),
    }
    for i in range(TINY_VIT["depth"]):
        b = f"{v}.blocks.{i}"
        state |= norm(f"{b}.norm1", w) | linear(f"{b}.attn.qkv", 3 * w, w)
        state |= linear(f"{b}.attn.proj", w, w) | norm(f"{b}.norm2", w)
        state |= linear(f"{b}.mlp.fc1", TINY_VIT["mlp"], w)
        state |= linear(f"{b}.mlp.fc2", w, TINY_VIT["mlp"])
    state |= norm(f"{v}.norm", w)

    t, h, inter = "blip.text_encoder", med["hidden_size"], med["intermediate_size"]
    state[f"{t}.embeddings.position_ids"] = torch.arange(med["max_position_embeddings"])[None]
    state[f"{t}.embeddings.word_embeddings.weight"] = torch.randn(med["vocab_size"], h, generator=g)
    state[f"{t}.embeddings.position_embeddings.weight"] = torch.randn(
        med["max_position_embeddings"], h, generator=g
    )
    state |= norm(f"{t}.embeddings.LayerNorm", h)
    for i in range(med["num_hidden_layers"]):
        layer = f"{t}.encoder.layer.{i}"
        for part, width in (("attention", h), ("crossattention", w)):
            state |= linear(f"{layer}.{part}.self.query", h, h)
            state |= linear(f"{layer}.{part}.self.key", h, width)
            state |= linear(f"{layer}.{part}.self.value", h, width)
            state |= linear(f"{layer}.{part}.output.dense", h, h)
            state |= norm(f"{layer}.{part}.output.LayerNorm", h)
        state |= linear(f"{layer}.intermediate.dense", inter, h)
        state |= linear(f"{layer}.output.dense", h, inter)
        state |= norm(f"{layer}.output.LayerNorm", h)
    state |= linear("blip.vision_proj", 16, w) | linear("blip.text_proj", 16, h)
    sizes = [h, 1024, 128, 64, 16, 1]
    for key, (d_in, d_out) in zip((0, 2, 4, 6, 7), itertools.pairwise(sizes), strict=True):
        state |= linear(f"mlp.layers.{key}", d_out, d_in)

    folder = out / "imagereward"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / "ImageReward.pt")
    config = out / "med_config.json"
    config.write_text(json.dumps(med, indent=2))
    return folder, config, tokenizer_dir
