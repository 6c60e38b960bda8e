"""SmPO smoothing (mmalign/diffusion/smooth.py): a swapped pair's per-side heatmaps follow its
images; a crash while a chunk of rewards is saved leaves no half-written chunk for the rerun to
trip on; two runs smoothing the same data into one folder do not collide."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from test_smpo_labels import Brightness, grey, tiny_pairs

from mmalign.data.schema import load_pairs, write_pairs
from mmalign.diffusion.smooth import score_pairs, smooth_dataset

CLEAN = [[[0.0] * 8] * 8] * 2
FLAWED = [[[0.0] * 8] * 8, [[1.0] * 8] * 8]  # artifact everywhere


def test_swapped_pairs_swap_their_heatmaps(tmp_path):
    # the bright image is the flawed one; the reward (brightness) prefers it
    rows = [
        {"prompt": "kept", "chosen": grey(200), "rejected": grey(50),
         "heatmaps": {"chosen": FLAWED, "rejected": CLEAN}},
        {"prompt": "swapped", "chosen": grey(50), "rejected": grey(200),
         "heatmaps": {"chosen": CLEAN, "rejected": FLAWED}},
    ]  # fmt: skip
    write_pairs(rows, tmp_path / "pairs", "image")
    smooth_dataset(load_pairs(tmp_path / "pairs"), Brightness(), tmp_path / "out", progress=False)
    out = load_pairs(tmp_path / "out")
    assert out["smooth_swapped"] == [False, True]
    for row in out:  # the flawed (grey 200) image keeps the flawed map on whichever side
        assert np.asarray(row["chosen"]).mean() == 200
        assert np.asarray(row["heatmaps"]["chosen"]).sum() == 64
        assert np.asarray(row["heatmaps"]["rejected"]).sum() == 0


def test_a_crash_while_saving_a_chunk_leaves_it_to_be_rescored(tmp_path, monkeypatch):
    import mmalign.diffusion.smooth as smooth

    monkeypatch.setattr(smooth, "CHUNK_ROWS", 2)
    rows = tiny_pairs([(10, 20), (30, 40), (50, 60), (70, 80)])
    real_save = torch.save

    def dies_midway(obj, path):  # the bytes start landing, then the process is killed
        real_save(obj, path)
        with open(path, "r+b") as f:
            f.truncate(20)
        raise KeyboardInterrupt

    monkeypatch.setattr(smooth.torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        score_pairs(rows, Brightness(), work=tmp_path, progress=False)
    monkeypatch.setattr(smooth.torch, "save", real_save)
    again = Brightness()
    rc, _ = score_pairs(rows, again, work=tmp_path, progress=False)  # resumes, no zip error
    assert again.scored == 8 and rc.tolist() == pytest.approx([10 / 255, 30 / 255, 50 / 255,
                                                               70 / 255])  # fmt: skip


def test_two_runs_smoothing_the_same_data_score_it_once(tmp_path):
    rows = tiny_pairs([(10 * i, 255 - 10 * i) for i in range(12)])
    start = threading.Barrier(2)

    class Slow(Brightness):
        def score(self, images, prompts):
            time.sleep(0.2)
            return super().score(images, prompts)

    scorers, errors = [Slow(), Slow()], []

    def run(scorer):
        start.wait()
        try:
            smooth_dataset(rows, scorer, tmp_path / "out", key="same", progress=False)
        except Exception as err:
            errors.append(repr(err))

    threads = [threading.Thread(target=run, args=(s,)) for s in scorers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(s.scored for s in scorers) == [0, 24]  # the second reused the first's output
    assert len(load_from_disk(str(tmp_path / "out"))) == 12
