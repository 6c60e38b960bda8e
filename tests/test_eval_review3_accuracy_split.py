"""`mmalign eval accuracy --data FOLDER --split S`: a saved dataset folder with several splits
was always read at its train split (no way to score its test split, and nothing said so)."""

from __future__ import annotations

import torch
from PIL import Image

from mmalign.cli import main
from mmalign.eval.accuracy import accuracy


class Brightness:
    """A scorer preferring the brighter image."""

    name = "brightness"

    def score(self, images, prompts):
        return torch.tensor([float(sum(im.convert("L").getdata())) for im in images])


def _split(chosen_value: int, rejected_value: int, n: int):
    from datasets import Dataset, Features, Value
    from datasets import Image as HFImage

    features = Features({"prompt": Value("string"), "chosen": HFImage(),
                         "rejected": HFImage(), "label": Value("float32")})  # fmt: skip
    return Dataset.from_dict({
        "prompt": [f"p{i}" for i in range(n)],
        "chosen": [Image.new("RGB", (4, 4), (chosen_value,) * 3) for _ in range(n)],
        "rejected": [Image.new("RGB", (4, 4), (rejected_value,) * 3) for _ in range(n)],
        "label": [1.0] * n,
    }, features=features)  # fmt: skip


def test_the_split_of_a_saved_folder_is_the_one_asked_for(tmp_path, capsys):
    from datasets import DatasetDict

    folder = tmp_path / "pairs"
    # the scorer agrees with every train label and with none of the test labels
    DatasetDict({"train": _split(200, 20, 4), "test": _split(20, 200, 3)}).save_to_disk(folder)
    train = accuracy(Brightness(), str(folder), threshold=0.0)
    test = accuracy(Brightness(), str(folder), threshold=0.0, split="test")
    assert (train["accuracy"], train["pairs"]) == (1.0, 4)
    assert (test["accuracy"], test["pairs"]) == (0.0, 3)
    # a spec that names its own split refuses --split rather than ignoring it
    args = ["eval", "accuracy", "--data", "toy:pairs:1", "--scorer", "toy:fidelity",
            "--split", "test"]  # fmt: skip
    assert main(args) != 0
    assert "--split is for a dataset folder" in capsys.readouterr().err
