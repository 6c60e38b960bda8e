"""`diffusion.dense` weights on rows whose label says the *rejected* image won (label 0, which
dpo and smpo train towards the rejected image): ImageDoctor's (1 - H) must weight the image the
loss reinforces, the winner, not the `chosen` column (review: it weighted the loser, so the
winner's flaws were reinforced at full weight and the loser's flaws no longer penalised)."""

from __future__ import annotations

import torch

from mmalign.config import from_dict
from mmalign.diffusion import dense as dense_mod
from mmalign.diffusion.dense import DenseWeights
from mmalign.rewards import get_scorer
from mmalign.toy.flaws import inject_flaws
from mmalign.toy.render import render_batch
from mmalign.toy.world import sample_prompts
from mmalign.train.config import DenseConfig


class _LabelledPairs:
    """A PairImages stand-in: pixels [2,3,R,R] in [-1, 1], prompt and label per row."""

    def __init__(self, chosen, rejected, prompts, labels):
        self.pixels = torch.stack([chosen, rejected], 1).mul(2).sub(1)
        self.prompts, self.labels = prompts, labels

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> dict:
        return {"pixels": self.pixels[i], "prompt": self.prompts[i],
                "label": torch.tensor(self.labels[i])}  # fmt: skip


def test_label_zero_rows_weight_the_winning_rejected_image(tmp_path):
    n = 4
    prompts = [p.text for p in sample_prompts(n, "train", 0)]
    clean = render_batch(sample_prompts(n, "train", 0))
    flawed = inject_flaws(clean, 0)[0]
    scorer = get_scorer("toy:flaws")
    # the reference: the flawed image as the winner in the chosen column (label 1)
    winner_first = DenseWeights.compute(scorer, flawed, clean, prompts, (4, 4)).weights
    paired_first = DenseWeights.compute(scorer, flawed, clean, prompts, (4, 4), sides="paired")
    assert float(winner_first[:, 0].min()) < 1  # the flaws show
    # the same pairs stored the other way round: clean chosen, flawed rejected, label 0, mixed
    # with label-1 rows (rows 0 and 2) that must keep the chosen column's weights
    labels = [1.0, 0.0, 1.0, 0.0]
    chosen = torch.stack([flawed[i] if labels[i] else clean[i] for i in range(n)])
    rejected = torch.stack([clean[i] if labels[i] else flawed[i] for i in range(n)])
    pairs = _LabelledPairs(chosen, rejected, prompts, labels)
    for sides, ref in (("chosen", winner_first), ("paired", paired_first.weights)):
        spec = from_dict(DenseConfig, {"scorer": "toy:flaws", "sides": sides}, "diffusion.dense")
        got = dense_mod.pair_weights(spec, pairs, 4, cache_dir=tmp_path).weights
        for i in range(n):
            expect = ref[i] if labels[i] else ref[i].flip(0)  # (chosen, rejected) columns
            torch.testing.assert_close(got[i], expect, atol=1e-6, rtol=0)
        # read back from the cache: the same weights
        again = dense_mod.pair_weights(spec, pairs, 4, cache_dir=tmp_path).weights
        assert torch.equal(again, got)
