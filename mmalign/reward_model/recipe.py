"""`model.kind: reward`: a dense reward head trained by the one training loop.

RAHF's objective (Liang et al., CVPR 2024, Sec. 4.1): MSE between predicted and annotated
heatmaps plus MSE between predicted and annotated scores. In the loop's terms the recipe scores
two "pairs" per row, `heatmap` and `scores`, whose `chosen` score is `-MSE` of the row, and the
objective holds `sft` on each (`sft` of a score with no lengths is `-chosen`, so the term is
exactly that MSE; `weight` sets the balance, 1 and 1 in RAHF). A third pair, `heatmap_flaws`,
is the MSE over the truly flawed pixels alone (mmalign's addition, see `score`).
`model.name_or_path` is `toy:dense` (a new toy head) or a CLIP checkpoint; `reward:` holds the
head's options (`DenseRewardConfig`: dim, depth, heads, map_size, max_tokens, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError
from ..losses import PairScores
from ..rewards.dense import DenseRewardModel
from ..toy.build_record import build_left_out, toy_build
from ..train.config import Config
from .data import DenseTensors, collate_dense, open_dense

PAIRS = ("heatmap", "scores", "heatmap_flaws")
REWARD_DIR = "reward"


def check_objective(cfg: Config) -> None:
    """Only `sft` terms on the pairs `heatmap` and `scores` make sense for a reward head."""
    for i, term in enumerate(cfg.objective):
        pair, loss = term.get("pair", "main"), term.get("loss")
        if pair not in PAIRS or loss != "sft":
            raise ConfigError(
                f"objective[{i}]: model.kind reward trains with {{pair: heatmap, loss: sft}} and "
                f"{{pair: scores, loss: sft}} (the MSE terms), got pair {pair!r} loss {loss!r}"
            )


class RewardRecipe:
    def __init__(self, cfg: Config, accelerator: Any):
        if cfg.lora is not None:
            raise ConfigError("model.kind reward trains the whole head: set lora: null")
        check_objective(cfg)
        self.cfg, self.accelerator = cfg, accelerator
        name = cfg.model.name_or_path
        self.model = DenseRewardModel.from_backbone(
            "toy" if name == "toy:dense" else name, **dict(cfg.reward)
        )
        rows, self.report = open_dense(
            cfg.data.path, cfg.data.split, toy_options=cfg.data.toy,
            max_samples=cfg.data.max_samples,
        )  # fmt: skip
        if self.report is not None and accelerator.is_main_process and self.report.num_skipped:
            print(f"mmalign: {self.report}")
        # toy data: what its build left out (flaws that no pixel shows), said and recorded as
        # the preference recipes do (`build_skipped`)
        built = toy_build(cfg.data.path, toy_options=cfg.data.toy)
        if accelerator.is_main_process and built is not None and built.skipped:
            print(f"mmalign: {build_left_out(cfg.data.path, built, cfg.data.max_samples)}")
        self.build_skipped = dict(built.skipped) if built is not None else None
        self.dataset = DenseTensors(rows, self.model.config.map_size)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate_dense(items)
        batch["ids"], batch["mask"] = self.model.tokenize(batch.pop("prompt"))
        return batch

    def to_device(self, batch: dict[str, Any], rows: list[int], device: torch.device):
        return {k: v.to(device) for k, v in batch.items()}

    def score(self, model, batch, seeds, *, with_reference: bool) -> dict[str, PairScores]:
        maps, scores = model(batch["pixels"], batch["ids"], batch["mask"])
        heat = -(maps.float() - batch["heatmaps"]).pow(2).mean(dim=(1, 2, 3))
        score = -(scores.float() - batch["scores"]).pow(2).mean(dim=1)
        # The MSE over each image's flawed pixels only (truth > 0.5; 0 for a clean image): with
        # flaws on ~1% of the pixels, the plain pixel MSE drives the sigmoid to 0 everywhere,
        # where its gradient vanishes; this optional term keeps the flawed pixels in view.
        flawed = (batch["heatmaps"] > 0.5).float()
        err = (maps.float() - batch["heatmaps"]).pow(2) * flawed
        flaws = -err.sum(dim=(1, 2, 3)) / flawed.sum(dim=(1, 2, 3)).clamp(min=1)
        zero = torch.zeros_like(heat)
        return {
            "heatmap": PairScores(heat, zero),
            "scores": PairScores(score, zero),
            "heatmap_flaws": PairScores(flaws, zero),
        }

    def validate(self, step: int) -> None:
        return None  # `mmalign eval dense` draws the heatmap overlays

    def save(self, output_dir: Path) -> dict[str, Any]:
        path = self.accelerator.unwrap_model(self.model).save_pretrained(output_dir / REWARD_DIR)
        return {"kind": "dense_reward", "path": str(path)}

    def describe(self) -> dict[str, Any]:
        c = self.model.config
        return {
            "task": "reward",
            "backbone": c.backbone,
            "rows": len(self.dataset),
            "skipped": self.report.skipped if self.report is not None else {},
            **({"build_skipped": self.build_skipped} if self.build_skipped else {}),
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }
