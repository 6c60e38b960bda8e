"""SmPO soft labels (mmalign/data/smooth.py, mmalign/diffusion/smooth.py): the arithmetic by
hand, swaps and ties counted, the rewards kept, resumable scoring, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image, Value

from mmalign.cli import main
from mmalign.data.smooth import P_MAX, soft_labels
from mmalign.diffusion.smooth import load_report, score_pairs, smooth_dataset


def sig(x: float) -> float:
    return math.exp(x) / (math.exp(x) + 1)


def test_labels_by_hand_with_swaps_and_ties():
    # rewards in the data's order; the global min-max is 0 .. 1 over both columns
    f64 = torch.float64
    labels = soft_labels(
        torch.tensor([1.0, 0.2, 0.5, 0.0], dtype=f64), torch.tensor([0.0, 0.6, 0.5, 0.2], dtype=f64)
    )
    want = [
        math.exp(1) / (math.exp(1) + math.exp(0)),  # n 1 vs 0: the largest label
        sig(0.6 - 0.2),  # swapped: the reward prefers the "rejected" image
        0.5,  # a tie: kept, p = 0.5
        sig(0.2 - 0.0),  # swapped
    ]
    assert labels.label.tolist() == pytest.approx(want, abs=1e-12)
    assert labels.label[0].item() == pytest.approx(P_MAX)
    assert labels.swapped.tolist() == [False, True, False, True]
    assert (labels.num_swapped, labels.num_ties) == (2, 1)
    assert labels.reward_chosen.tolist() == [1.0, 0.6, 0.5, 0.2]
    assert labels.reward_rejected.tolist() == [0.0, 0.2, 0.5, 0.0]
    assert sum(c for _, _, c in labels.histogram(5)) == 4
    assert labels.histogram(5)[-1][2] == 1  # p = e/(1+e) lands in the closed last bin


def test_min_max_is_global_not_per_pair():
    # the same reward gap gives the same label wherever the pair sits in the reward range
    labels = soft_labels(torch.tensor([10.0, 30.0, 20.0]), torch.tensor([0.0, 20.0, 10.0]))
    assert labels.label.tolist() == pytest.approx([sig(1 / 3)] * 3)


def test_equal_rewards_everywhere_and_no_pairs_are_errors():
    with pytest.raises(ValueError, match="same reward"):
        soft_labels(torch.tensor([0.3, 0.3]), torch.tensor([0.3, 0.3]))
    with pytest.raises(ValueError, match="no pairs"):
        soft_labels(torch.tensor([]), torch.tensor([]))
    with pytest.raises(ValueError, match="not finite"):
        soft_labels(torch.tensor([0.3, float("nan")]), torch.tensor([0.1, 0.2]))


class Brightness:
    """A reward that is the image's mean brightness; counts the images it scores."""

    name = "test:brightness"

    def __init__(self) -> None:
        self.scored = 0

    def score(self, images, prompts):
        self.scored += len(images)
        return torch.tensor([float(np.asarray(im).mean()) / 255 for im in images])


def grey(level: int):
    from PIL import Image as PILImage

    return PILImage.fromarray(np.full((8, 8, 3), level, dtype=np.uint8))


def tiny_pairs(levels: list[tuple[int, int]]) -> Dataset:
    features = Features({"prompt": Value("string"), "chosen": Image(), "rejected": Image()})
    return Dataset.from_dict(
        {
            "prompt": [f"p{i}" for i in range(len(levels))],
            "chosen": [grey(c) for c, _ in levels],
            "rejected": [grey(r) for _, r in levels],
        },
        features=features,
    )


def test_a_dataset_is_ordered_labelled_and_keeps_its_rewards(tmp_path):
    rows = tiny_pairs([(255, 0), (51, 153), (102, 102)])
    report = smooth_dataset(rows, Brightness(), tmp_path / "out", progress=False)
    from datasets import load_from_disk

    out = load_from_disk(str(tmp_path / "out"))
    assert (report.labels.num_swapped, report.labels.num_ties) == (1, 1)
    # pair 1 was swapped: its chosen image is now the brighter one
    assert (
        np.asarray(out[1]["chosen"]).mean() == 153 and np.asarray(out[1]["rejected"]).mean() == 51
    )
    assert out["smooth_swapped"] == [False, True, False]
    assert out["reward_chosen"] == pytest.approx([1.0, 0.6, 0.4])
    assert out["reward_rejected"] == pytest.approx([0.0, 0.2, 0.4])
    assert out["label"] == pytest.approx([P_MAX, sig(0.4), 0.5])
    assert load_report(tmp_path / "out").labels.label.tolist() == pytest.approx(out["label"])


def test_scoring_resumes_from_saved_chunks(tmp_path, monkeypatch):
    import mmalign.diffusion.smooth as smooth

    monkeypatch.setattr(smooth, "CHUNK_ROWS", 2)
    rows = tiny_pairs([(10, 20), (30, 40), (50, 60), (70, 80), (90, 100)])
    first = Brightness()
    work = tmp_path / "work"
    work.mkdir()
    rc, rr = score_pairs(rows, first, batch_size=2, work=work, progress=False)
    assert first.scored == 10 and len(list(work.iterdir())) == 3
    (work / "rewards-00001.pt").unlink()  # an interrupted run: the second chunk never saved
    again = Brightness()
    rc2, rr2 = score_pairs(rows, again, batch_size=2, work=work, progress=False)
    assert again.scored == 4  # only the missing chunk's two pairs, both images
    assert torch.equal(rc, rc2) and torch.equal(rr, rr2)


def test_all_equal_rewards_write_nothing(tmp_path):
    rows = tiny_pairs([(100, 100), (100, 100)])
    with pytest.raises(ValueError, match="same reward"):
        smooth_dataset(rows, Brightness(), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_names_an_unknown_scorer(tmp_path, capsys):
    assert main(["data", "smooth", "toy:pairs", "--scorer", "toy:fidelty",
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    assert "toy:fidelity" in capsys.readouterr().err  # did you mean
    assert not (tmp_path / "o").exists()
