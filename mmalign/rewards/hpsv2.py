"""HPSv2 (Wu et al. 2023, "Human Preference Score v2"): OpenCLIP ViT-H-14 fine-tuned on HPD v2.

score = cos(text, image) (the paper reports x100) on the image resized to 224 on its longer
side and padded with black to a square, as HPSv2's `preprocess_val` does; checkpoint
`HPS_v2.1_compressed.pt` (v2.1, the default) or `HPS_v2_compressed.pt` (v2.0) from the hub repo
`xswu/HPSv2`, a dict whose 'state_dict' holds the whole CLIP. The `hpsv2` package reloads it on
every call; this scorer loads it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..suggest import did_you_mean
from .common import ScorerOptions, resolve_file
from .files import ScorerFile
from .openclip import OpenClipScorer

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+

REPO = "xswu/HPSv2"
CHECKPOINTS = {"v2.1": "HPS_v2.1_compressed.pt", "v2.0": "HPS_v2_compressed.pt"}


def _check_version(version: str) -> None:
    if version not in CHECKPOINTS:
        raise ValueError(f"unknown HPSv2 version '{version}'; {did_you_mean(version, CHECKPOINTS)}")


def _name(version: str) -> str:
    """How a user names the scorer (`hpsv2` for the default version)."""
    return "hpsv2" if version == "v2.1" else f"hpsv2:{version}"


def files(
    version: str = "v2.1",
    *,
    path: str | Path = REPO,
    arch: str | Path = "ViT-H-14",
    **_options: object,
) -> list[ScorerFile]:
    """The checkpoint (and a model config JSON given as `arch`) `HPSv2` loads
    (rewards/files.py)."""
    _check_version(version)
    file = CHECKPOINTS[version]
    found = [ScorerFile(_name(version), "path", "checkpoint", str(path), in_folder=(file,),
                        hub_file=file, give="PATH", shown=f"{file} from {path}")]  # fmt: skip
    if Path(arch).suffix == ".json":
        found.append(ScorerFile(_name(version), "arch", "OpenCLIP model config", str(arch),
                                hub=False, give="FILE"))  # fmt: skip
    return found


class HPSv2(OpenClipScorer):
    """`hpsv2[:v2.1|v2.0]`: `path` is the checkpoint file, a folder holding it, or a hub repo;
    `arch` the OpenCLIP architecture (or a model config JSON)."""

    variants = tuple(CHECKPOINTS)
    # HPSv2 scores the whole image, longer side resized and padded to a square
    # (its preprocess_val, resize_longest_max=True), not CLIP's centre crop
    fit = "pad"

    def __init__(
        self,
        version: str = "v2.1",
        *,
        path: str | Path = REPO,
        arch: str | Path = "ViT-H-14",
        **options: Unpack[ScorerOptions],
    ) -> None:
        _check_version(version)
        super().__init__(**options)
        self.name = f"hpsv2:{version}"
        checkpoint = resolve_file(path, CHECKPOINTS[version], scorer=_name(version))
        self._load(arch, checkpoint)

    def _score_batch(self, pixels: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self._cosine(pixels, prompts)
