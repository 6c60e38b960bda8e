"""The dense reward head: image + prompt tokens -> four scores and two flaw heatmaps.

RAHF (Liang et al., "Rich Human Feedback for Text-to-Image Generation", CVPR 2024, Sec. 4.1
and Fig. 3), as ImageDoctor (Guo et al. 2025) uses it: image patch tokens from a vision
encoder and the prompt's tokens from a text encoder, projected to one width, are concatenated
and fused by self-attention layers; the image tokens, put back on their grid, go through a
convolution/deconvolution decoder to the heatmaps (misalignment, artifact; sigmoid), and the
pooled fused tokens through an MLP to the scores (alignment, aesthetics, plausibility,
overall; sigmoid, so in [0, 1]). Trained with MSE on heatmaps plus MSE on scores.

Backbones: `toy` (a small convolutional patch encoder and a hashed word embedding, for the toy
world's 32 px images), `clip` (a transformers `CLIPModel`'s vision and text towers, RAHF's
ViT + text encoder in CLIP form) and `siglip` (a `SiglipModel`'s: RAHF's own image encoder is
a SigLIP-pretrained ViT). `from_backbone` picks by the checkpoint's `config.model_type`.
Departure from RAHF: the decoder also sees a two-layer convolution of the pixels at the heatmap
resolution (a skip path), since a patch grid alone cannot place a flaw finer than a patch;
RAHF's T5 text encoder becomes the CLIP or SigLIP text tower.

Saved with `save_pretrained` as `config.json` + `model.safetensors` (+ `tokenizer/` for CLIP
and SigLIP);
`from_pretrained` checks every key and shape and names the first wrong one.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...config import InputError
from ...data.dense import DENSE_SCORES
from ...data.schema import HEATMAP_CHANNELS
from ..common import clip_pixels

CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_DIR = "config.json", "model.safetensors", "tokenizer"
MARKER = "mmalign_dense_reward"
# backbone (= the checkpoint's config.model_type) -> transformers (config, model) class names
TOWERS = {"clip": ("CLIPConfig", "CLIPModel"), "siglip": ("SiglipConfig", "SiglipModel")}


@dataclass
class DenseRewardConfig:
    """Architecture; everything `from_pretrained` needs to rebuild the module."""

    backbone: Literal["toy", "clip", "siglip"] = "toy"
    image_size: int = 32  # pixels fed to the image encoder
    map_size: int = 32  # heatmap side the decoder predicts
    dim: int = 64  # fusion width
    depth: int = 2  # fusion self-attention layers
    heads: int = 4
    patch: int = 4  # toy: patch stride of the image encoder
    vocab_size: int = 1024  # toy: hashed word buckets
    max_tokens: int = 16  # prompt tokens kept (toy: words; clip: at most its context)
    # the towers' transformers config, to_dict(): CLIPConfig or SiglipConfig (the key keeps its
    # first name so heads saved before SigLIP support load unchanged)
    clip: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.backbone not in ("toy", *TOWERS):
            raise InputError(
                f"dense reward backbone must be one of toy, {', '.join(TOWERS)}; "
                f"got {self.backbone!r}"
            )
        if self.backbone != "toy" and self.clip is None:
            raise InputError(f"dense reward backbone {self.backbone} needs its model config")
        for name in ("image_size", "map_size", "dim", "depth", "heads", "patch", "max_tokens"):
            if getattr(self, name) < 1:
                raise InputError(f"dense reward {name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise InputError(f"dense reward dim {self.dim} is not divisible by heads {self.heads}")


def hash_tokens(
    prompts: Sequence[str], vocab: int, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Toy tokenizer: lower-cased words hashed (CRC-32) into `vocab - 1` buckets (0 = padding);
    (ids [B, length], mask [B, length] bool). Longer prompts keep their first `length` words."""
    rows = []
    for text in prompts:  # built as lists, one tensor at the end: no per-word tensor writes
        row = [1 + zlib.crc32(w.encode()) % (vocab - 1)
               for w in text.lower().replace(",", " ").split()[:length]]  # fmt: skip
        rows.append(row + [0] * (length - len(row)))
    ids = torch.tensor(rows, dtype=torch.long).reshape(len(prompts), length)
    return ids, ids > 0


def fuse_tokens(fusion: nn.TransformerEncoder, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """`fusion(x, src_key_padding_mask=~keep)` for pre-norm GELU layers, with attention through
    `F.scaled_dot_product_attention` in every mode.

    The same arithmetic as `nn.TransformerEncoderLayer`'s training path (norm_first, need_weights
    off); without grad, PyTorch would take its fused fast path instead, whose masked softmax on
    the CPU costs more per image at batch 32 than at batch 1 (4.9 ms per call of 32 against 0.11
    ms per call of one, measured here), which undid batching.
    """
    b, n, d = x.shape
    mask = keep[:, None, None, :]  # [B,1,1,N]: True = attend
    for layer in fusion.layers:
        attn = layer.self_attn
        h = attn.num_heads
        q, k, v = F.linear(layer.norm1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
        q, k, v = (t.reshape(b, n, h, d // h).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + attn.out_proj(out.transpose(1, 2).reshape(b, n, d))
        x = x + layer.linear2(F.gelu(layer.linear1(layer.norm2(x))))
    return x


class ToyImageEncoder(nn.Module):
    def __init__(self, c: DenseRewardConfig) -> None:
        super().__init__()
        half = max(c.dim // 2, 8)
        self.net = nn.Sequential(
            nn.Conv2d(3, half, 3, padding=1), nn.GELU(),
            nn.Conv2d(half, c.dim, c.patch, stride=c.patch), nn.GELU(),
            nn.Conv2d(c.dim, c.dim, 3, padding=1),
        )  # fmt: skip
        self.grid = c.image_size // c.patch
        self.pos = nn.Parameter(torch.zeros(1, self.grid * self.grid, c.dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.net(pixels * 2 - 1)
        return x.flatten(2).transpose(1, 2) + self.pos


class ToyTextEncoder(nn.Module):
    def __init__(self, c: DenseRewardConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(c.vocab_size, c.dim, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(1, c.max_tokens, c.dim))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.embed(ids) + self.pos[:, : ids.shape[1]]


class Decoder(nn.Module):
    """Grid tokens -> heatmaps: x2 transposed convolutions up to the map size, a pixel skip
    path concatenated there, two convolutions, sigmoid."""

    def __init__(self, c: DenseRewardConfig, grid: int) -> None:
        super().__init__()
        ups, width, size = [], c.dim, grid
        while size * 2 <= c.map_size:
            out = max(width // 2, 16)
            ups += [nn.ConvTranspose2d(width, out, 2, stride=2), nn.GELU()]
            width, size = out, size * 2
        self.up = nn.Sequential(*ups)
        self.skip = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.GELU(), nn.Conv2d(16, 16, 3, padding=1), nn.GELU()
        )
        self.head = nn.Sequential(
            nn.Conv2d(width + 16, 32, 3, padding=1), nn.GELU(),
            nn.Conv2d(32, len(HEATMAP_CHANNELS), 1),
        )  # fmt: skip
        self.grid, self.map_size = grid, c.map_size

    def forward(self, tokens: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        b, _, d = tokens.shape
        x = self.up(tokens.transpose(1, 2).reshape(b, d, self.grid, self.grid))
        size = (self.map_size, self.map_size)
        if x.shape[-2:] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        p = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=True)
        return torch.sigmoid(self.head(torch.cat([x, self.skip(p * 2 - 1)], 1)))


class DenseRewardModel(nn.Module):
    """`forward(pixels [B,3,H,W] in [0,1], ids, mask) -> (heatmaps [B,2,M,M], scores [B,4])`."""

    def __init__(self, config: DenseRewardConfig, tokenizer: Any = None) -> None:
        super().__init__()
        self.config = c = config
        self.tokenizer = tokenizer  # CLIP: a transformers tokenizer; toy: hashing
        if c.backbone == "toy":
            if c.image_size % c.patch:
                raise InputError(f"image_size {c.image_size} is not a multiple of {c.patch}")
            self.vision: nn.Module = ToyImageEncoder(c)
            self.text: nn.Module = ToyTextEncoder(c)
            grid, vdim, tdim = c.image_size // c.patch, c.dim, c.dim
            self.clip_model = None
        else:
            import transformers

            config_cls, model_cls = (getattr(transformers, n) for n in TOWERS[c.backbone])
            self.clip_model = model_cls(config_cls.from_dict(dict(c.clip or {})))
            vc = self.clip_model.config.vision_config
            grid = vc.image_size // vc.patch_size
            vdim, tdim = vc.hidden_size, self.clip_model.config.text_config.hidden_size
            c.image_size = vc.image_size
            self.vision, self.text = nn.Identity(), nn.Identity()
        self.grid = grid
        self.vision_proj = (
            nn.Linear(vdim, c.dim) if vdim != c.dim or c.backbone != "toy" else nn.Identity()
        )
        self.text_proj = (
            nn.Linear(tdim, c.dim) if tdim != c.dim or c.backbone != "toy" else nn.Identity()
        )
        self.modality = nn.Parameter(torch.zeros(2, c.dim))
        layer = nn.TransformerEncoderLayer(
            c.dim, c.heads, 4 * c.dim, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.fusion = nn.TransformerEncoder(layer, c.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.dim)
        self.decoder = Decoder(c, grid)
        self.score_head = nn.Sequential(
            nn.Linear(2 * c.dim, c.dim), nn.GELU(), nn.Linear(c.dim, len(DENSE_SCORES))
        )

    # ------------------------------------------------------------------ inputs

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        if c.backbone == "toy":
            return hash_tokens(prompts, c.vocab_size, c.max_tokens)
        limit = self.clip_model.config.text_config.max_position_embeddings  # type: ignore[union-attr]
        enc = self.tokenizer(
            list(prompts), padding="max_length", truncation=True,
            max_length=min(c.max_tokens, limit), return_tensors="pt",
        )  # fmt: skip
        return enc["input_ids"], enc["attention_mask"].bool()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [0,1] -> the encoder's input: the whole image resized to the encoder's
        square, then as is (toy), CLIP-normalised (clip) or to [-1, 1] as SiglipImageProcessor
        does (siglip).

        The CLIP backbone is not given CLIPImageProcessor's centre crop: the heatmaps cover the
        whole image (training pools the targets of the whole image to the map, the scorer maps
        the map back over it), so the tower must see the whole image, or a flaw outside the
        crop would never reach it and one inside would come back stretched. For a square image
        the two are the same."""
        s = self.config.image_size
        if self.config.backbone == "clip":
            if images.shape[-2:] != (s, s):
                images = F.interpolate(
                    images, size=(s, s), mode="bicubic", align_corners=False, antialias=True
                ).clamp(0, 1)
            return clip_pixels(images, s)  # square at size s: normalised only
        if self.config.backbone == "siglip":
            if images.shape[-2:] != (s, s):
                images = F.interpolate(
                    images, size=(s, s), mode="bicubic", align_corners=False, antialias=True
                ).clamp(0, 1)
            return images * 2 - 1
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", antialias=True)
        return images

    # ------------------------------------------------------------------ forward

    def forward(
        self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        img_tokens, scores = self.fuse(pixels, ids, mask)
        return self.decoder(img_tokens, pixels), scores

    def scores(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The four scores [B,4] alone: the heatmap decoder does not run."""
        return self.fuse(pixels, ids, mask)[1]

    def fuse(
        self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the fused image tokens [B,N,dim], the scores [B,4]) of images in [0,1] and prompts."""
        x = self.preprocess(pixels)
        if self.clip_model is not None:
            img = self.clip_model.vision_model(pixel_values=x).last_hidden_state
            if self.config.backbone == "clip":
                img = img[:, 1:]  # CLIP's class token; SigLIP's ViT has none, all are patches
            txt = self.clip_model.text_model(
                input_ids=ids, attention_mask=mask.long()
            ).last_hidden_state
        else:
            img, txt = self.vision(x), self.text(ids, mask)
        img = self.vision_proj(img) + self.modality[0]
        txt = self.text_proj(txt) + self.modality[1]
        n = img.shape[1]
        keep = torch.cat([torch.ones_like(mask[:, :1]).expand(-1, n).bool(), mask.bool()], 1)
        fused = self.norm(fuse_tokens(self.fusion, torch.cat([img, txt], 1), keep))
        img_tokens, txt_tokens = fused[:, :n], fused[:, n:]
        m = mask.to(fused.dtype)[..., None]
        txt_mean = (txt_tokens * m).sum(1) / m.sum(1).clamp(min=1)
        scores = torch.sigmoid(self.score_head(torch.cat([img_tokens.mean(1), txt_mean], 1)))
        return img_tokens, scores

    # ------------------------------------------------------------------ save / load

    @classmethod
    def from_backbone(cls, name_or_path: str, **options: Any) -> DenseRewardModel:
        """A new head: `toy`, or a CLIP or SigLIP checkpoint (local folder or hub id; which one
        by its `config.model_type`) whose vision and text towers initialise the encoders (the
        fusion and heads start random). Another model type raises naming it: loading it as
        CLIP would fail deep in transformers with a shape error."""
        known = {f.name for f in fields(DenseRewardConfig)} - {"backbone", "clip"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InputError(f"dense reward: unknown option {unknown[0]!r}; valid: {sorted(known)}")
        if name_or_path == "toy":
            return cls(DenseRewardConfig(backbone="toy", **options))
        import transformers
        from transformers import AutoConfig, AutoTokenizer

        from ...hub import hub_errors

        with hub_errors(name_or_path, "model.name_or_path"):
            model_type = AutoConfig.from_pretrained(name_or_path).model_type
            if model_type not in TOWERS:
                raise InputError(
                    f"dense reward: model.name_or_path {name_or_path} is a {model_type!r} model; "
                    "the backbone must "
                    f"be a {' or '.join(repr(t) for t in TOWERS)} checkpoint (or 'toy')"
                )
            clip = getattr(transformers, TOWERS[model_type][1]).from_pretrained(name_or_path)
            tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        options.setdefault("max_tokens", clip.config.text_config.max_position_embeddings)
        config = DenseRewardConfig(backbone=model_type, clip=clip.config.to_dict(), **options)
        model = cls(config, tokenizer)
        assert model.clip_model is not None
        model.clip_model.load_state_dict(clip.state_dict())
        return model

    def save_pretrained(self, folder: str | Path) -> Path:
        """Config, weights and tokenizer into `folder`, each file with the umask's permissions
        (the weights too: safetensors 0.8 leaves them 0600, `make_readable`), so a reward
        model saved outside a training run can be shared as one saved by a run."""
        from safetensors.torch import save_file

        from ...files import make_readable

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(
            json.dumps({MARKER: 1, **asdict(self.config)}, indent=2, default=str) + "\n"
        )
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        make_readable(folder / WEIGHTS_FILE)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder / TOKENIZER_DIR)
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> DenseRewardModel:
        from safetensors.torch import load_file

        folder = checkpoint_folder(folder)
        raw = json.loads((folder / CONFIG_FILE).read_text())
        raw.pop(MARKER, None)
        known = {f.name for f in fields(DenseRewardConfig)}
        config = DenseRewardConfig(**{k: v for k, v in raw.items() if k in known})
        tokenizer = None
        if config.backbone != "toy":
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(folder / TOKENIZER_DIR)
        model = cls(config, tokenizer)
        state = load_file(str(folder / WEIGHTS_FILE))
        expected = model.state_dict()
        for key, value in expected.items():
            if key not in state:
                raise InputError(f"{folder / WEIGHTS_FILE}: missing key {key!r}")
            if state[key].shape != value.shape:
                raise InputError(
                    f"{folder / WEIGHTS_FILE}: key {key!r} has shape {tuple(state[key].shape)},"
                    f" the config {CONFIG_FILE} builds {tuple(value.shape)}"
                )
        extra = sorted(set(state) - set(expected))
        if extra:
            raise InputError(f"{folder / WEIGHTS_FILE}: unexpected key {extra[0]!r}")
        model.load_state_dict(state)
        return model.eval()


def checkpoint_folder(path: str | Path) -> Path:
    """The folder holding a dense head: `path`, or `path/reward` (a training output_dir)."""
    p = Path(path).expanduser()
    for folder in (p, p / "reward"):
        f = folder / CONFIG_FILE
        if f.is_file() and MARKER in json.loads(f.read_text()):
            if not (folder / WEIGHTS_FILE).is_file():
                raise InputError(f"{folder}: no {WEIGHTS_FILE} beside {CONFIG_FILE}")
            return folder
    if not p.exists():
        raise InputError(f"dense reward head {p} does not exist")
    raise InputError(f"{p} holds no dense reward head ({CONFIG_FILE} with '{MARKER}')")
