"""`toy:pairs` labelled by a trained dense head (`data.toy: {reward: dense:<path>}`) is keyed by
the head's weight files: a head retrained at the same path labels the same samples otherwise,
and the cached pairs of the old head were reused without a word (as SmPO's smoothed labels key
it, diffusion/smooth.py `scorer_key`)."""

from __future__ import annotations

import json
import os

from mmalign.rewards.dense.model import CONFIG_FILE, MARKER, WEIGHTS_FILE
from mmalign.toy.cache import toy_data_folder


def _head(folder):
    folder.mkdir(parents=True)
    (folder / CONFIG_FILE).write_text(json.dumps({MARKER: 1}))
    weights = folder / WEIGHTS_FILE
    weights.write_bytes(b"x" * 10)
    return weights


def test_a_dense_reward_head_keys_the_toy_pairs_by_its_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    weights = _head(tmp_path / "run" / "reward")  # a training output_dir holds it in reward/
    options = {"n": 8, "reward": f"dense:{tmp_path / 'run'}"}
    before = toy_data_folder("pairs", options)
    weights.write_bytes(b"y" * 10)
    os.utime(weights, ns=(1, 1))  # retrained in place: same size, other mtime
    assert toy_data_folder("pairs", options) != before
    # another reward, or none, keys as before (a programmatic reward has no weights)
    plain = {"n": 8, "reward": "toy:fidelity"}
    assert toy_data_folder("pairs", plain) == toy_data_folder("pairs", dict(plain))
    assert toy_data_folder("pairs", plain) != toy_data_folder("pairs", options)
