"""`toy:style` sampled from toy-flow (`--model` a toy-flow folder, as `pairs` allows) names its
rejected side toy-flow, as `pairs` does (`toy_model_name`): it said "toy-sd" whatever model
drew it, in the rows' `rejected_model` and the Pick-a-Pic copy's model column."""

from __future__ import annotations

import glob

import pyarrow.parquet as pq
import pytest

from mmalign.toy.datasets import build_dataset
from mmalign.toy.datasets import pairs as pairs_module
from mmalign.toy.datasets.common import quantise
from mmalign.toy.render import render_batch


class StableDiffusion3Pipeline:  # the class name is what toy_model_name reads
    pass


class StableDiffusionPipeline:
    pass


@pytest.mark.parametrize(
    ("pipe", "name"), [(StableDiffusion3Pipeline, "toy-flow"), (StableDiffusionPipeline, "toy-sd")]
)
def test_style_names_the_model_that_drew_the_rejected_side(pipe, name, tmp_path, monkeypatch):
    monkeypatch.setattr(pairs_module, "toy_sd_pipeline", lambda model: pipe())

    def drawn(pipe, texts, seed, **kw):
        return quantise(render_batch(texts, 32, "flat", seed=seed))

    monkeypatch.setattr(pairs_module, "model_images", drawn)
    summary = build_dataset("style", tmp_path, n=4, seed=0, progress=False)
    rows = pq.read_table(glob.glob(summary["paths"]["pickapic"] + "/*.parquet")[0]).to_pylist()
    models = {m for row in rows for m in (row["model_0"], row["model_1"])}
    assert models == {"toy-render-outlined", name}
