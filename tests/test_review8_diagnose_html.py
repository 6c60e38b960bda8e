"""Review 8: `mmalign data diagnose` on diffusion pairs writes report.html as the VLM path does.

Issue 24 asks `data diagnose` for pairs.parquet, summary.json and report.html. The diffusion
diagnosis (mmalign/eval/diagnose_diffusion.py) wrote the first two only, and its table had no
prompt to tell the pairs apart. Now it writes report.html too (the summary and the
lowest-margin pairs, every value escaped: prompts are user text), the parquet has a `prompt`
column, and the "wrote" line names report.html. The page head is the VLM report's, shared
through mmalign/diagnose_page.py.
"""

from __future__ import annotations

import json

import pandas as pd
from diffusion_helpers import save_tiny

from mmalign.cli import main

SCRIPT = "<script>alert('x')</script> a red square"


def _saved_pairs(folder):
    """Three saved image pairs; the first prompt holds markup, the second an ampersand."""
    from datasets import Dataset, Features, Image, Value
    from PIL import Image as PILImage

    colors = ((200, 0, 0), (0, 200, 0), (0, 0, 200), (9, 9, 9), (90, 90, 0), (0, 90, 90))
    images = [PILImage.new("RGB", (32, 32), c) for c in colors]
    features = Features({"prompt": Value("string"), "chosen": Image(), "rejected": Image()})
    columns = {"prompt": [SCRIPT, "green & blue", "a plain square"], "chosen": images[:3],
               "rejected": images[3:]}  # fmt: skip
    Dataset.from_dict(columns, features=features).save_to_disk(str(folder))
    return folder


def test_diffusion_diagnosis_writes_an_escaped_report(tmp_path, capsys):
    data = _saved_pairs(tmp_path / "pairs")
    tiny = save_tiny(tmp_path)
    out = tmp_path / "diag"
    code = main(["data", "diagnose", str(data), "--model", str(tiny), "--out", str(out),
                 "--draws", "1", "--device", "cpu", "--batch-size", "2", "--top", "2"])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "(pairs.parquet, summary.json, report.html)" in printed.out
    assert "scoring pairs" in printed.err  # the progress bar over the scored batches

    table = pd.read_parquet(out / "pairs.parquet")
    assert list(table["prompt"]) == [SCRIPT, "green & blue", "a plain square"]
    summary = json.loads((out / "summary.json").read_text())
    page = (out / "report.html").read_text()
    # the prompt shows as text: no script element reaches the page
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; a red square" in page
    assert f"Preference-data diagnostics: {data}" in page and "&quot;ranking_accuracy&quot;" in page
    # the --top 2 pairs of lowest ranking margin, lowest first, with the parquet's columns
    margin = table["score_chosen"] - table["score_rejected"]
    lowest = list(table.assign(m=margin).sort_values("m", kind="stable")["row"][:2])
    body = page.split("<table>", 1)[1]
    shown = [int(cell.split("</td>", 1)[0]) for cell in body.split("<tr><td>")[1:]]
    assert shown == lowest and summary["pairs"] == 3
    for column in ["row", "prompt", "score_chosen", "ranking_correct", "ranking_margin"]:
        assert f"<th>{column}</th>" in body


def test_report_ranks_by_the_implicit_margin_where_there_is_one():
    from mmalign.eval.diagnose_diffusion import render_report

    table = pd.DataFrame({
        "row": [0, 1, 2, 3],
        "prompt": ["a", "b & c", "d", "e"],
        "score_chosen": [-1.0, -2.0, -3.0, -4.0],
        "score_rejected": [-9.0, -9.0, -9.0, -9.0],  # ranking margins 8, 7, 6, 5
        "ranking_correct": [True] * 4,
        "implicit_margin": [0.5, -0.25, 0.0, -0.25],
        "implicit_correct": [1.0, 0.0, 0.5, 0.0],
    })  # fmt: skip
    page = render_report(table, {"data": "<b>d</b>", "pairs": 4}, top=3)
    assert "lowest implicit margin" in page and "ranking_margin" not in page
    body = page.split("<table>", 1)[1]
    rows = [int(cell.split("</td>", 1)[0]) for cell in body.split("<tr><td>")[1:]]
    assert rows == [1, 3, 2]  # equal margins keep the data's order
    assert "<td>b &amp; c</td>" in body and "<td>-0.25</td>" in body
    assert "&lt;b&gt;d&lt;/b&gt;" in page and "<b>d</b>" not in page


def test_rows_are_named_by_their_row_in_data_and_top_must_be_positive(tmp_path, capsys):
    """Row 0 of DATA has no prompt (skipped by validation): the parquet's `row` is each pair's
    row in DATA (it was its position among the rows kept); `--top 0` is refused."""
    from datasets import Dataset, Features, Image, Value
    from PIL import Image as PILImage

    images = [PILImage.new("RGB", (32, 32), (40 * k, 0, 0)) for k in range(6)]
    features = Features({"prompt": Value("string"), "chosen": Image(), "rejected": Image()})
    columns = {"prompt": ["", "a red square", "a blue circle"], "chosen": images[:3],
               "rejected": images[3:]}  # fmt: skip
    data = tmp_path / "pairs"
    Dataset.from_dict(columns, features=features).save_to_disk(str(data))
    tiny, out = save_tiny(tmp_path), tmp_path / "diag"
    args = ["data", "diagnose", str(data), "--model", str(tiny), "--out", str(out),
            "--draws", "1", "--device", "cpu"]  # fmt: skip
    assert main([*args, "--top", "0"]) != 0
    assert "--top must be >= 1, got 0" in capsys.readouterr().err
    assert main(args) == 0, capsys.readouterr().err
    table = pd.read_parquet(out / "pairs.parquet")
    assert list(table["row"]) == [1, 2] and list(table["prompt"]) == columns["prompt"][1:]
