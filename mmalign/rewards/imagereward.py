"""ImageReward (Xu et al. 2023, "ImageReward: Learning and Evaluating Human Preferences for
Text-to-Image Generation"): BLIP's ViT-L/16 image encoder (224 px) and BERT-base "med" text
encoder cross-attending to the image, fine-tuned on ImageRewardDB, with an MLP head
768-1024-128-64-16-1 on the text [CLS] feature (METHODS.md section 4).

The released checkpoint `ImageReward.pt` (hub repo `THUDM/ImageReward`, "ImageReward-v1.0") is
a plain state dict of the package's `ImageReward` module. imagereward_model.py rebuilds that
model on transformers' BLIP classes (`BlipVisionModel`, `BlipTextModel` with cross-attention and
no pooler) and renames the checkpoint's keys to them (`convert_state_dict`), so the `image-reward`
package (which pins timm 0.6.13 and downloads bert-base-uncased itself) is not needed. The
forward is the package's `ImageReward.score`: the prompt tokenized by BLIP's BERT tokenizer
(max_length 35, padded to it, truncated; the first token stays [CLS]), the image resized
(bicubic) and centre-cropped to 224 with CLIP's mean/std, text features cross-attending to all
image tokens, the [CLS] feature through the MLP (no activations between its linear layers),
z-normalised with the package's mean 0.16717 and std 1.03334.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .common import CLIP_MEAN, CLIP_STD, BatchedScorer, ScorerOptions, local_file, resolve_file
from .files import ScorerFile, require_files
from .imagereward_model import IGNORED, ImageRewardModel, convert_state_dict

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+

# the network and its key converter live in imagereward_model.py; importable from here too
__all__ = [
    "IGNORED",
    "ImageRewardModel",
    "ImageRewardScorer",
    "blip_tokenizer",
    "convert_state_dict",
    "files",
    "load_checkpoint",
]

REPO = "THUDM/ImageReward"
CHECKPOINT = "ImageReward.pt"
FILES = (CHECKPOINT, "ImageReward.safetensors")  # looked for, in this order, in a folder
ALIASES = {"ImageReward-v1.0": REPO}  # the package's model name
TOKENIZER = "bert-base-uncased"  # BLIP's tokenizer, plus [DEC] (bos) and [ENC]
MAX_LENGTH = 35  # the package's `score`: padding="max_length", truncation=True
# The package's normalisation of the raw reward (ImageReward.mean / .std).
MEAN, STD = 0.16717362830052426, 1.0333394966054072


def _source(path: str | Path) -> str:
    return ALIASES.get(str(path), str(path))


def files(
    *,
    path: str | Path = REPO,
    med_config: str | Path | Mapping[str, Any] | None = None,
    tokenizer: str | Path = TOKENIZER,
    **_options: object,
) -> list[ScorerFile]:
    """The tokenizer, checkpoint and med config file `ImageRewardScorer` loads
    (rewards/files.py)."""
    found = [
        _tokenizer_file(tokenizer),
        ScorerFile("imagereward", "path", "checkpoint", _source(path), in_folder=FILES,
                   hub_file=CHECKPOINT, give="PATH", shown=f"{CHECKPOINT} from {_source(path)}"),
    ]  # fmt: skip
    if isinstance(med_config, str | Path):
        found.append(ScorerFile("imagereward", "med_config", "med config", str(med_config),
                                hub=False, give="FILE"))  # fmt: skip
    return found


def _tokenizer_file(source: str | Path) -> ScorerFile:
    return ScorerFile("imagereward", "tokenizer", "tokenizer", str(source))


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of `path` (a file, a folder holding it, or a hub repo): safetensors for
    `.safetensors`, else `torch.load(weights_only=True)`."""
    file = resolve_file(_source(path), *FILES, scorer="imagereward")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    state = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{file} is not a state dict ({type(state).__name__})")
    return dict(state)


def blip_tokenizer(source: str | Path = TOKENIZER):
    """BERT's tokenizer with the two tokens BLIP adds ([DEC] as bos, then [ENC]), so ids match
    the checkpoint's 30524-token vocabulary."""
    from transformers import AutoTokenizer

    from ..config import InputError
    from ..hub import hub_errors

    f = _tokenizer_file(source)
    require_files([f])
    try:
        with hub_errors(source, f.key):
            tokenizer = AutoTokenizer.from_pretrained(str(source))
    except InputError:
        raise
    except OSError as err:
        raise OSError(
            f"imagereward: cannot load the BERT tokenizer '{source}' ({err}); without hub "
            f"access give a local bert-base-uncased folder: {f.option_text}"
        ) from err
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_tokens(["[ENC]"], special_tokens=True)
    return tokenizer


class ImageRewardScorer(BatchedScorer):
    """`imagereward`: `path` is the checkpoint (`ImageReward.pt` or `.safetensors`), a folder
    holding it, or a hub repo (default `THUDM/ImageReward`); `med_config` BLIP's text-encoder
    config (JSON file or dict; default the BERT-base one ImageReward uses); `tokenizer` a local
    folder or hub id of the BERT tokenizer (default bert-base-uncased)."""

    def __init__(
        self,
        *,
        path: str | Path = REPO,
        med_config: str | Path | Mapping[str, Any] | None = None,
        tokenizer: str | Path = TOKENIZER,
        **options: Unpack[ScorerOptions],
    ) -> None:
        super().__init__(**options)
        self.name = "imagereward"
        # Cheap failures first: a bad local path, every file not in the cache while offline,
        # then the tokenizer, then the (1.8 GB) weights.
        local_file(_source(path), FILES)
        require_files(files(path=path, med_config=med_config, tokenizer=tokenizer))
        self.tokenizer = blip_tokenizer(tokenizer)
        model = ImageRewardModel.from_state_dict(load_checkpoint(path), med_config)
        vocab = model.text.config.vocab_size
        if len(self.tokenizer) != vocab:
            raise ValueError(
                f"imagereward: the tokenizer has {len(self.tokenizer)} tokens with BLIP's [DEC] "
                f"and [ENC], the checkpoint's vocabulary {vocab}"
            )
        self.model = model.to(self.device, self.dtype)
        self.model.mlp.float()  # the package runs the head on float features
        self.size = model.vision.config.image_size
        self.mean, self.std = CLIP_MEAN, CLIP_STD
        self.max_tokens = MAX_LENGTH

    def _too_long(self, prompts: list[str]) -> list[str]:
        ids = self.tokenizer(prompts, truncation=True, max_length=MAX_LENGTH + 1)["input_ids"]
        return [p for p, row in zip(prompts, ids, strict=True) if len(row) > MAX_LENGTH]

    def tokens(self, prompts: Sequence[str]):
        return self.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=MAX_LENGTH,
            return_tensors="pt",
        ).to(self.device)  # fmt: skip

    def _score_batch(self, pixels: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        text = self.tokens(prompts)
        reward = self.model(pixels, text.input_ids, text.attention_mask)
        return (reward - MEAN) / STD
