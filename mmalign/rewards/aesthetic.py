"""The LAION aesthetic predictor (improved-aesthetic-predictor, Schuhmann 2022): an MLP
768-1024-128-64-16-1 on L2-normalised CLIP ViT-L/14 (OpenAI) image embeddings; scores are on
the AVA 1-10 scale. The "linearMSE" checkpoint `sac+logos+ava1-l14-linearMSE.pth` is a plain
state dict with keys layers.{0,2,4,6,7}.{weight,bias}: Linear layers with Dropout at 1, 3 and
5 and no activations (METHODS.md section 4). The prompt is not used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .common import RewardMLP, ScorerOptions, resolve_file
from .files import ScorerFile
from .openclip import OpenClipScorer, tag_file

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+

CHECKPOINT = "sac+logos+ava1-l14-linearMSE.pth"
# the same state dict as safetensors, looked for after the .pth in a folder (as ImageReward's)
SAFETENSORS = "sac+logos+ava1-l14-linearMSE.safetensors"
# A hub mirror of the GitHub file (christophschuhmann/improved-aesthetic-predictor); pass a
# local path to use your own copy.
REPO = "camenduru/improved-aesthetic-predictor"
LINEAR_KEYS = (0, 2, 4, 6, 7)


class AestheticMLP(RewardMLP):
    """The predictor's MLP with its module indices, so the public state dict loads strictly."""

    def __init__(self, sizes: Sequence[int] = (768, 1024, 128, 64, 16, 1)) -> None:
        if len(sizes) != 6:
            raise ValueError(f"the aesthetic MLP has 5 linear layers (6 sizes), got {sizes}")
        super().__init__(sizes)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> AestheticMLP:
        """Sizes read from the weights (768 ... 1 for the public file), then a strict load."""
        missing = [f"layers.{i}.weight" for i in LINEAR_KEYS if f"layers.{i}.weight" not in state]
        if missing:
            raise ValueError(f"not an aesthetic-predictor state dict: missing {missing}")
        sizes = [state["layers.0.weight"].shape[1]]
        sizes += [state[f"layers.{i}.weight"].shape[0] for i in LINEAR_KEYS]
        mlp = cls(sizes)
        mlp.load_state_dict(state, strict=True)
        return mlp


def files(
    *, path: str | Path = REPO, clip: str = "ViT-L-14:openai", **_options: object
) -> list[ScorerFile]:
    """The MLP checkpoint and the CLIP backbone's weights `Aesthetic(path=, clip=)` loads
    (rewards/files.py)."""
    found = [
        ScorerFile(
            "aesthetic",
            "path",
            "MLP checkpoint",
            str(path),
            in_folder=(CHECKPOINT, SAFETENSORS),
            hub_file=CHECKPOINT,
            give="PATH",
            shown=f"{CHECKPOINT} from {path}",
        )
    ]
    arch, _, pretrained = clip.partition(":")
    pretrained = pretrained or "openai"
    if Path(pretrained).is_file():
        return found
    if Path(pretrained).suffix or "/" in pretrained:  # a file, not a tag
        return [
            *found,
            ScorerFile(
                "aesthetic", "clip", "CLIP backbone", pretrained, hub=False, give=f"{arch}:FILE"
            ),
        ]
    weights = tag_file("aesthetic", "clip", arch, pretrained, f"{arch}:FILE")
    return [*found, weights] if weights.source else found


class Aesthetic(OpenClipScorer):
    """`aesthetic`: `path` is the MLP checkpoint (`.pth` or `.safetensors` file, folder or hub
    repo); `clip` the backbone as `<arch>:<pretrained tag or file>` (default ViT-L-14:openai; a
    file is taken for the OpenAI weights the MLP was trained on, QuickGELU included)."""

    def __init__(
        self,
        *,
        path: str | Path = REPO,
        clip: str = "ViT-L-14:openai",
        **options: Unpack[ScorerOptions],
    ) -> None:
        super().__init__(**options)
        self.name = "aesthetic"
        file = resolve_file(
            path, CHECKPOINT, SAFETENSORS, scorer="aesthetic", what="MLP checkpoint"
        )
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
        # float32 whatever the backbone's dtype: the reference feeds the MLP a FloatTensor
        self.mlp = AestheticMLP.from_state_dict(state).to(self.device, torch.float32).eval()
        arch, _, pretrained = clip.partition(":")
        pretrained = pretrained or "openai"
        # the MLP was trained on OpenAI's ViT-L/14 embeddings: a local file of the backbone is
        # built as the `openai` tag's weights need (QuickGELU), where the arch has that tag
        self._load(arch, pretrained, "openai" if Path(pretrained).is_file() else None,
                   given_as=("aesthetic", "clip", f"{arch}:FILE"))  # fmt: skip
        width = self.model.visual.output_dim
        if width != self.mlp.layers[0].in_features:
            raise ValueError(
                f"aesthetic MLP expects {self.mlp.layers[0].in_features}-d embeddings, "
                f"the CLIP backbone {clip} gives {width}"
            )

    def _too_long(self, prompts: list[str]) -> list[str]:
        return []  # the prompt is not read

    def _score_batch(self, pixels: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        embedding = F.normalize(self.model.encode_image(pixels), dim=-1)
        return self.mlp(embedding.float()).squeeze(-1)
