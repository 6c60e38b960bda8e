"""`mmalign eval vlm` left its held-out build behind (review 8): `heldout_build` and
`prism_eval_rows` built the toy rows in `tempfile.mkdtemp()` folders that nothing removed (one
per evaluation, images included; 227 of them on the machine this was found on). The rows are
now read into memory and the folder is removed."""

from __future__ import annotations

import tempfile

from PIL import Image

from mmalign.vlm.evaluate import heldout_build
from mmalign.vlm.prism.evaluate import prism_eval_rows


def test_the_heldout_builds_leave_no_folder_behind(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    rows, _ = heldout_build("safety", 8, 0)
    prism = prism_eval_rows(4, seed=7)
    assert list(scratch.iterdir()) == []  # was two mmalign-eval-* folders
    # the rows stay readable, images and all, with their folder gone
    assert len(rows) > 0 and isinstance(rows[0]["image"], Image.Image)
    assert len(prism) > 0 and prism[len(prism) - 1]["prompt"]
