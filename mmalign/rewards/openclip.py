"""The OpenCLIP-backed scorers' shared part (HPSv2, CLIP score, aesthetic): building the model
without downloads beyond the checkpoint asked for, and the text-image cosine."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import InputError
from ..hub import hub_errors
from .common import CLIP_MEAN, CLIP_STD, BatchedScorer
from .files import ScorerFile, require_files

try:
    import open_clip
except ImportError:  # optional: the `eval` extra
    open_clip = None


def require_open_clip():
    if open_clip is None:
        raise ImportError(
            "this scorer needs open_clip: pip install 'mmalign[eval]' (open_clip_torch)"
        )
    return open_clip


def model_name(arch: str | Path) -> str:
    """An OpenCLIP architecture name (`ViT-H-14`), or a path to a model config JSON, which is
    registered under its file stem (how tests build tiny models with the real key layout)."""
    oc = require_open_clip()
    path = Path(arch)
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"OpenCLIP model config {path} does not exist")
        oc.add_model_config(path)
        return path.stem
    if str(arch) not in oc.list_models():
        from ..suggest import did_you_mean

        raise ValueError(
            f"unknown OpenCLIP model '{arch}'; {did_you_mean(str(arch), oc.list_models())}"
        )
    return str(arch)


def tag_file(scorer: str, option: str, arch: str | Path, tag: str, give: str) -> ScorerFile:
    """The hub repo OpenCLIP downloads `arch`'s pretrained `tag` from, as a `ScorerFile` of
    `scorer` (given instead with `--scorer-path` `option`); an unknown tag raises, a path
    that does not exist is named as such. A tag whose weights come from elsewhere (a URL)
    gives a `ScorerFile` that needs no check."""
    oc = require_open_clip()
    name = model_name(arch)
    tags = oc.list_pretrained_tags_by_model(name)
    if tag not in tags:
        if Path(tag).suffix or "/" in tag:
            raise FileNotFoundError(f"OpenCLIP checkpoint {tag} does not exist")
        from ..suggest import did_you_mean

        raise InputError(f"OpenCLIP {name} has no pretrained weights '{tag}'; "
                         f"{did_you_mean(tag, tags)}")  # fmt: skip
    repo = (oc.get_pretrained_cfg(name, tag).get("hf_hub") or "").strip("/")
    shown = f"{name}:{tag} (hub repo {repo})"
    return ScorerFile(scorer, option, "OpenCLIP weights", repo, give=give, shown=shown)


def create(
    arch: str | Path,
    *,
    pretrained: str | Path | None,
    device: torch.device,
    dtype: torch.dtype,
    tag: str | None = None,
    given_as: tuple[str, str, str] | None = None,
):
    """(model, tokenizer, image size, mean, std, interpolation, resize mode): the model and its
    `preprocess_val` settings. `pretrained` is an OpenCLIP tag (`openai`,
    `laion2b_s32b_b79k`: downloaded by open_clip), a local checkpoint file (loaded with
    `weights_only=True`; a dict with a 'state_dict' key, as HPSv2's, works too) or None
    (random weights, to be loaded by the caller). `tag` names the weights a local file holds
    (`openai`), so the model is built, and its images preprocessed, as they were trained.
    `given_as`: (scorer, option, placeholder) by which a user gives these weights locally,
    for messages (`files.ScorerFile`; default the `clip` scorer's `path`)."""
    oc = require_open_clip()
    name = model_name(arch)
    local = pretrained is not None and Path(pretrained).is_file()
    key = "the OpenCLIP weights"  # where a download failure says to give them
    if pretrained is not None and not local:
        scorer, option, give = given_as or (f"clip:{name}:{pretrained}", "path", "FILE")
        weights = tag_file(scorer, option, name, str(pretrained), give)
        if weights.source:  # its hub repo usable (cached when offline)
            require_files([weights])
            key = weights.key
        tag = str(pretrained)
    # OpenAI's CLIPs were trained with QuickGELU, but `ViT-L-14` and the like are configured with
    # nn.GELU: open_clip >= 3 builds those with nn.GELU under the `openai` tag and only warns
    # (older versions rebuilt the OpenAI model). The tag's config says which one the weights need.
    quick_gelu = bool(tag and oc.get_pretrained_cfg(name, tag).get("quick_gelu", False))
    root = logging.getLogger()
    level = root.level
    if local:  # open_clip warns "no pretrained weights loaded": the next line loads them
        root.setLevel(logging.ERROR)
    try:
        with hub_errors(f"{name}:{pretrained}", key):
            model = oc.create_model(
                name,
                pretrained=None if local else pretrained,
                device="cpu",
                force_quick_gelu=quick_gelu,
            )
    finally:
        root.setLevel(level)
    if local:
        oc.load_checkpoint(model, str(pretrained), weights_only=True)
    model = model.to(device=device, dtype=dtype).eval()
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else size
    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    if local and tag:  # open_clip merges a tag's preprocessing only when it loads the tag
        tag_cfg = oc.get_pretrained_cfg(name, tag)
        keys = ("mean", "std", "interpolation", "resize_mode")
        cfg |= {k: tag_cfg[k] for k in keys if k in tag_cfg}
    mean, std = tuple(cfg.get("mean", CLIP_MEAN)), tuple(cfg.get("std", CLIP_STD))
    interpolation = cfg.get("interpolation") or "bicubic"
    resize_mode = cfg.get("resize_mode") or "shortest"
    return model, oc.get_tokenizer(name), int(size), mean, std, interpolation, resize_mode


class OpenClipScorer(BatchedScorer):
    """A scorer on an OpenCLIP model: `_load` builds it with its tokenizer and preprocessing
    (size, mean, std; for a scorer that crops, the model's resize mode and interpolation, as
    open_clip's `preprocess_val`: SigLIP and DFN squash, MobileCLIP resizes bilinearly) on the
    scorer's device and dtype; `_cosine` is cos(text, image)."""

    def _load(
        self,
        arch: str | Path,
        pretrained: str | Path | None,
        tag: str | None = None,
        given_as: tuple[str, str, str] | None = None,
    ) -> None:
        self.model, self.tokenizer, self.size, self.mean, self.std, interpolation, mode = create(
            arch, pretrained=pretrained, device=self.device, dtype=self.dtype, tag=tag,
            given_as=given_as,
        )  # fmt: skip
        if self.fit == "crop":  # HPSv2 ("pad") follows its own preprocess_val, not the model's
            fits = {"shortest": "crop", "squash": "squash"}
            if mode not in fits or interpolation not in ("bicubic", "bilinear"):
                raise ValueError(
                    f"{self.name}: OpenCLIP {arch} preprocesses with resize_mode={mode!r}, "
                    f"interpolation={interpolation!r}; supported: {sorted(fits)}, bicubic/bilinear"
                )
            self.fit, self.interpolation = fits[mode], interpolation
        self.max_tokens = getattr(self.tokenizer, "context_length", None)

    def _too_long(self, prompts: list[str]) -> list[str]:
        # one token more than the model reads: a prompt that fits leaves that position the
        # padding an empty prompt has there
        n = self.max_tokens
        if not n or not prompts:
            return []
        tokens = self.tokenizer([*prompts, ""], context_length=n + 1)
        return [p for p, row in zip(prompts, tokens[:-1], strict=True) if row[n] != tokens[-1, n]]

    def _cosine(self, pixels: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        image = F.normalize(self.model.encode_image(pixels), dim=-1)
        text = F.normalize(
            self.model.encode_text(self.tokenizer(list(prompts)).to(self.device)), dim=-1
        )
        return (image * text).sum(-1)
