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

    from ..data.toy.paths import model_path

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
