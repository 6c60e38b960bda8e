"""A pair labelled 0 (the `rejected` answer preferred) is the same preference as its swapped
copy labelled 1, so CHES / LN-CHES (Razin et al., y+ = the preferred answer; the scores are
not symmetric in y+ and y-) must be the same for both, and `ln_ches:keep_lowest` must rank
them alike."""

from __future__ import annotations

import pytest
from vlm_helpers import label_zero_copies

from mmalign.vlm.diagnose import diagnose_rows
from mmalign.vlm.load import load_vlm


def test_label_zero_pair_scores_ches_with_rejected_as_y_plus():
    rows = label_zero_copies()
    vlm = load_vlm("toy:vlm")
    cols = diagnose_rows(vlm.model, vlm.processor, rows, progress=False).columns
    assert cols["rejected_preferred"] == [False, True, False, True]
    for i in (0, 2):
        assert cols["ches"][i + 1] == pytest.approx(cols["ches"][i], rel=1e-9, abs=1e-9)
        assert cols["ln_ches"][i + 1] == pytest.approx(cols["ln_ches"][i], rel=1e-9, abs=1e-9)
