"""One convention for implicit-reward accuracy on ties, in `mmalign eval accuracy --model` and
`mmalign data diagnose` (diffusion and VLM pairs):

- an exact tie of the implicit reward (margin 0, e.g. a model against itself) counts half, as
  `eval accuracy --model` counted it; `data diagnose` counted it as a miss (accuracy 0 where
  `eval accuracy` said 0.5 on the same pairs). The per-pair `implicit_correct` is 1, 0.5 or 0.
- a pair labelled 0.5 (a tie in the labels) has no right order: it is left out of the ranking
  and implicit accuracies and counted (`tied_labels`). The diffusion path left such pairs out;
  the VLM diagnosis scored them as if labelled 1. VLM pairs labelled 0.5 stay in the table
  (CHES and `--filter` need them) with `tied_label` set and no accuracy value.
"""

from __future__ import annotations

import json

import pandas as pd
from datasets import Dataset
from diffusion_helpers import save_tiny
from vlm_helpers import pair_rows

from mmalign.cli import main


def test_diffusion_diagnose_counts_a_zero_margin_as_half(tmp_path, capsys):
    """The base against itself as the "adapter" (a pipeline folder: a full-model reference,
    its own UNet loaded again): every implicit margin is exactly 0."""
    tiny = save_tiny(tmp_path)
    out = tmp_path / "diag"
    code = main(
        [
            "data",
            "diagnose",
            "toy:flaws",
            "--model",
            str(tiny),
            "--adapter",
            str(tiny),
            "--out",
            str(out),
            "--max-samples",
            "4",
            "--draws",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert code == 0, capsys.readouterr().err
    table = pd.read_parquet(out / "pairs.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert (table["implicit_margin"] == 0).all()
    assert list(table["implicit_correct"]) == [0.5] * len(table)
    assert summary["implicit_accuracy"] == 0.5
    assert summary["implicit_ties"] == len(table)


def _labelled(labels: list[float]) -> Dataset:
    a, b = pair_rows()
    base = [a, b, a, b]
    return Dataset.from_list([{**r, "label": v} for r, v in zip(base, labels, strict=False)])


def test_vlm_diagnose_counts_a_zero_margin_as_half():
    from mmalign.vlm.diagnose import add_reference, diagnose_rows, summarize
    from mmalign.vlm.load import load_vlm

    vlm = load_vlm("toy:vlm")
    rows = pair_rows()
    diag = diagnose_rows(vlm.model, vlm.processor, rows, progress=False)
    same = diagnose_rows(vlm.model, vlm.processor, rows, progress=False)
    add_reference(diag, same, "toy:vlm")  # the model as its own reference: margins 0
    assert diag.columns["implicit_correct"] == [0.5] * len(rows)
    summary = summarize(diag)
    assert summary["implicit_accuracy"] == 0.5 and summary["implicit_ties"] == len(rows)


def test_vlm_diagnose_leaves_tied_labels_out_of_the_accuracies():
    from mmalign.vlm.diagnose import add_reference, diagnose_rows, summarize, summarize_by
    from mmalign.vlm.load import load_vlm

    vlm = load_vlm("toy:vlm")
    plain = diagnose_rows(vlm.model, vlm.processor, pair_rows(), progress=False).columns
    rows = _labelled([1.0, 0.5, 1.0, 0.5])
    diag = diagnose_rows(vlm.model, vlm.processor, rows, progress=False)
    cols = diag.columns
    assert cols["row"] == [0, 1, 2, 3]  # kept: CHES and --filter read every pair
    assert cols["tied_label"] == [False, True, False, True]
    assert cols["ranking_correct"][1] is None and cols["ranking_correct"][3] is None
    assert cols["ranking_correct"][0] == plain["ranking_correct"][0]
    summary = summarize(diag)
    assert summary["pairs"] == 4 and summary["tied_labels"] == 2
    # the accuracy of the two decided pairs (both the first pair of pair_rows)
    assert summary["ranking_accuracy"] == float(plain["ranking_correct"][0])
    by = summarize_by(diag, ["x", "x", "y", "y"])
    assert by["x"]["ranking_accuracy"] == float(plain["ranking_correct"][0])
    same = diagnose_rows(vlm.model, vlm.processor, rows, progress=False)
    add_reference(diag, same, "toy:vlm")
    assert cols["implicit_correct"] == [0.5, None, 0.5, None]
    assert summarize(diag)["implicit_accuracy"] == 0.5
    # only tied labels: no accuracy at all, rather than one over nothing
    only = diagnose_rows(vlm.model, vlm.processor, _labelled([0.5, 0.5]), progress=False)
    assert summarize(only)["ranking_accuracy"] is None


def test_diffusion_scoring_leaves_tied_labels_out_and_counts_them(tmp_path):
    """The diffusion side (shared by `eval accuracy --model` and `data diagnose`): a 0.5-labelled
    pair is left out and counted, as the VLM accuracies now leave it out."""
    from PIL import Image

    from mmalign.data.schema import write_pairs
    from mmalign.eval.implicit import score_pairs

    tiny = save_tiny(tmp_path)
    rows = [{"prompt": f"a {c} square", "chosen": Image.new("RGB", (32, 32), c),
             "rejected": Image.new("RGB", (32, 32), "black"), "label": v}
            for c, v in (("red", 1.0), ("blue", 0.5), ("green", 0.0))]  # fmt: skip
    write_pairs(rows, tmp_path / "pairs", "image")
    s = score_pairs(str(tiny), str(tmp_path / "pairs"), base=str(tiny), draws=1, device="cpu")
    assert s.kept == [0, 2] and s.ties == 1 and s.swapped == 1
    margin = s.implicit_margin()
    assert bool((margin == 0).all())
