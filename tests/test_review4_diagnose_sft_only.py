"""PRISM-CoT rows (`mmalign data prism-import`) hold the SFT_ONLY marker as `rejected`, not an
answer: CHES, LN-CHES and ranking accuracy against it would be numbers about a placeholder.
The diagnosis skips such rows and counts them, like rows too long for `--max-length`."""

from __future__ import annotations

from vlm_helpers import pair_rows

from mmalign.data.prism_files import SFT_ONLY
from mmalign.vlm.diagnose import diagnose_rows, summarize
from mmalign.vlm.load import load_vlm


def test_rows_with_the_sft_only_marker_are_counted_skips_not_scored():
    vlm = load_vlm("toy:vlm")
    a, b = pair_rows()
    rows = [{**a, "rejected": SFT_ONLY}, b, {**b, "rejected": SFT_ONLY}]
    diag = diagnose_rows(vlm.model, vlm.processor, rows, progress=False)
    assert diag.columns["row"] == [1]
    assert diag.report.skipped == {"sft_only": 2}
    assert diag.report.examples["sft_only"] == [0, 2]
    alone = diagnose_rows(vlm.model, vlm.processor, [b], progress=False)
    assert diag.columns["ln_ches"] == alone.columns["ln_ches"]
    assert summarize(diag)["skipped"] == {"sft_only": 2}
