"""BPO with a partly filled `blind` column: the rows' own blind answers are kept and only the
rows without one get a generated answer (every row's answer used to be replaced by the
model's as soon as one row lacked one)."""

from __future__ import annotations

from test_vlm_train import _Accel, vlm_config

from mmalign.vlm.data import open_vlm_pairs
from mmalign.vlm.recipe import VLMRecipe

BPO = [{"pair": "main", "loss": "dpo", "beta": 0.1}, {"pair": "blind", "loss": "dpo", "beta": 0.1}]


def test_the_data_blind_answers_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "cache"))
    rows, _ = open_vlm_pairs("toy:safety")
    given = ["MY OWN BLIND ANSWER", None, "ANOTHER ONE", None]
    rows.select(range(4)).add_column("blind", given).save_to_disk(str(tmp_path / "data"))
    cfg = vlm_config(tmp_path / "run", objective=BPO,
                     data={"path": str(tmp_path / "data"), "toy": None})  # fmt: skip
    recipe = VLMRecipe(cfg, _Accel())
    data = recipe.dataset
    blind = {data.index[i][0]: data[i][1]["blind"] for i in range(len(data))}
    kept = {i: given[i] for i in (0, 2) if i in blind}
    assert kept and all(blind[i] == text for i, text in kept.items())
    assert all(isinstance(blind[i], str) and blind[i] for i in (1, 3) if i in blind)
