"""A resume reads past a metrics line cut short by the stop it resumes from.

A run stopped while appending to metrics.jsonl (killed, a full disk) leaves a last line that
is not JSON; `rewrite_metrics` parsed every line, so every later resume stopped with a
JSONDecodeError before training.
"""

from __future__ import annotations

from test_train_review_resume import LinearRecipe, _config, _interrupted_copy, _metrics

from mmalign.train.loop import METRICS_FILE, train


def test_a_cut_metrics_line_does_not_block_the_resume(tmp_path):
    full = tmp_path / "full"
    train(_config(full), LinearRecipe)
    part = tmp_path / "part"
    _interrupted_copy(full, part, 3)
    lines = (full / METRICS_FILE).read_text().splitlines()
    # steps 1-4 were logged, then the stop cut the line of step 5
    (part / METRICS_FILE).write_text("\n".join(lines[:4]) + "\n" + lines[4][:17])
    train(_config(part, resume_from="latest"), LinearRecipe)
    a, b = _metrics(full), _metrics(part)
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in range(1, 7):
        assert abs(a[step]["loss"] - b[step]["loss"]) <= 1e-6, step
