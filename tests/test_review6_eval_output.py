"""Review 6: what `eval accuracy`, `eval winrate` and `sample` print and draw.

`eval accuracy` printed "without ties" for the tie protocol at threshold 0, which still counts
every labelled tie (at 0.5); it is now "forced choice (threshold 0, no predicted ties)", beside
the accuracy over the pairs without a tied label. The win-rate line gained wins/ties/losses, and
the "where the base scores below 1" line no longer repeats the overall numbers when no base image
is at the ceiling. `sample`'s one header (`seed 0, 20 steps, cfg`) was cut at the column's edge
and labelled every row with seed 0, though row i is drawn with seed + i (a second prompt's
images continue the seeds); the header wraps and each row names its seed. The help texts name
their defaults and say "image path", and `--device` reads "the device for both pipelines".
"""

from __future__ import annotations

import json

import torch
from diffusion_helpers import save_tiny
from test_eval_accuracy import _split

from mmalign.cli import build_parser, main
from mmalign.eval.accuracy import accuracy, outcome_scores
from mmalign.eval.winrate import describe, win_stats
from mmalign.rewards import get_scorer


def test_accuracy_names_the_forced_choice_and_leaves_tied_labels_out(tmp_path, capsys):
    _split(tmp_path / "pp", "test", seed=2)  # rendered toy pairs, 3 of them labelled ties
    out = tmp_path / "acc.json"
    code = main(["eval", "accuracy", "--data", "pickapic:test", "--scorer", "toy:fidelity",
                 "--pickapic-root", str(tmp_path / "pp"), "--threshold", "0.01",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["tied_labels"] > 0  # toy pairs keep their ties: the two numbers differ in meaning
    assert "without ties" not in printed
    assert f"forced choice (threshold 0, no predicted ties) {r['accuracy_no_ties']:.1%}" in printed
    untied = r["pairs"] - r["tied_labels"]
    assert f"{r['accuracy_untied']:.1%} on the {untied} pairs without a tied label" in printed


def test_accuracy_untied_is_plain_accuracy_over_untied_labels(tmp_path):
    from mmalign.eval.accuracy import load_pairs, score_pairs

    root = str(tmp_path / "pp")
    _split(root, "test", seed=3)
    scorer = get_scorer("toy:fidelity")
    r = accuracy(scorer, "pickapic:test", threshold=0.0, pickapic_root=root)
    rows, _ = load_pairs("pickapic:test", pickapic_root=root)
    diff, label = score_pairs(scorer, rows, 32)
    keep = (label - 0.5).abs() >= 1e-6
    assert 0 < int(keep.sum()) < len(label)
    assert r["accuracy_untied"] == float(outcome_scores(diff[keep], label[keep], 0.0).mean())
    assert r["accuracy_no_ties"] == float(outcome_scores(diff, label, 0.0).mean())


def test_winrate_line_counts_and_the_ceiling_line_only_with_images_at_it():
    base = torch.tensor([0.5, 0.6, 0.7, 0.8], dtype=torch.float64)
    tuned = torch.tensor([0.6, 0.6, 0.5, 0.9], dtype=torch.float64)  # win, tie, loss, win
    text = describe("toy:fidelity", win_stats(base, tuned, ceiling=1.0))
    assert "n=4, wins/ties/losses 2/1/1" in text
    assert "where the base scores below" not in text  # no base image at 1: nothing to split
    base[1] = tuned[1] = 1.0  # one base image at the ceiling, tied
    text = describe("toy:fidelity", win_stats(base, tuned, ceiling=1.0))
    assert "where the base scores below 1:" in text
    assert "n=3, wins/ties/losses 2/0/1" in text and "1 base images at 1, 0 of them lost" in text


def test_image_grid_wraps_a_long_header():
    from PIL import Image

    from mmalign.grid import CELL, LINE, image_grid

    cell = Image.new("RGB", (32, 32), "grey")
    short = image_grid([[cell]], ["step 3"])
    long = image_grid([[cell]], ["20 steps, cfg 2.5, 512 px, user scale 0.5"])
    assert short.size == (CELL, LINE + CELL)  # as before: one header line
    assert long.size[1] >= 2 * LINE + CELL  # wrapped, not cut at the column's edge
    band = long.crop((0, LINE, CELL, 2 * LINE)).convert("L")
    assert min(band.getdata()) < 128  # the second header line is drawn


def test_sample_labels_each_row_with_its_seed(tmp_path, monkeypatch, capsys):
    import mmalign.grid as grid

    seen = {}
    real = grid.image_grid

    def capture(columns, headers, row_labels=None, notes=None):
        seen.update(headers=list(headers), labels=list(row_labels))
        return real(columns, headers, row_labels, notes)

    monkeypatch.setattr(grid, "image_grid", capture)
    tiny = save_tiny(tmp_path)
    code = main(["sample", str(tiny), "--prompt", "a red circle", "--prompt", "a green square",
                 "--n", "2", "--seed", "5", "--steps", "2", "--guidance", "2",
                 "--out", str(tmp_path / "g.jpg")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert seen["headers"] == ["2 steps, cfg 2"]
    assert seen["labels"] == ["seed 5: a red circle", "seed 6: a red circle",
                              "seed 7: a green square", "seed 8: a green square"]  # fmt: skip


def _help(*command: str) -> str:
    parser = build_parser()
    for action in parser._actions:  # walk down the subcommands
        if action.__class__.__name__ == "_SubParsersAction":
            sub = action.choices[command[0]]
            break
    for name in command[1:]:
        sub = next(a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction").choices[
            name
        ]
    return " ".join(sub.format_help().split())


def test_help_names_defaults_and_reads_right():
    winrate = _help("eval", "winrate")
    assert "pipelines runs" not in winrate and "the device for both pipelines" in winrate
    for text in ("(default toy:heldout)", "(default toy:fidelity)", "(default 0)",
                 "denoising steps (default: the model's"):  # fmt: skip
        assert text in winrate, text
    sample = _help("sample")
    assert "PNG path" not in sample and "the grid's image path: .png, .jpg" in sample
    assert "seed of the first image (default 0)" in sample and "uses seed + i" in sample
    assert "denoising steps (default: the model's" in sample
    assert "(seeds seed, seed+1, ...)" not in sample  # not per prompt: row i uses seed + i
