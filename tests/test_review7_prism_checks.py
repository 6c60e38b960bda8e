"""PRISM's generation takes raw prompts only, and a resume on other weights is refused before
any model loads (review 7).

1. `prism-mcts` and `eval vlm --task prism` templated a prompt already in the chat template's
   format a second time (training refuses it: `ChatFormat.check_prompt`). `prism-mcts` now
   checks every row's prompt with the policy's processor before the policy loads, leaves the
   refused rows out and counts them (stderr, `summary.json`); `eval vlm --task prism` counts
   them under `dropped`; `generate_full` and `StageGenerator` raise on one.
2. A resume's weights keys (policy, `vlm:` judge) were compared only after the models had
   loaded; `VLMRef` reads the same key from the files, so such a resume is refused at once.
"""

from __future__ import annotations

import json

import pytest
from test_review6_prism_resume import _args, _counted, _refused, tagged_model  # noqa: F401
from vlm_helpers import random_images

from mmalign.cli import main
from mmalign.vlm.chat_format import RowError

TEMPLATED = "USER: <image>\nIs the request allowed? ASSISTANT:"


def _prism_rows(n: int) -> list[dict]:
    from datasets import load_from_disk

    from mmalign.toy.cache import toy_pairs

    rows = load_from_disk(str(toy_pairs("prism", {"n": n})))
    return [dict(rows[i]) for i in range(len(rows))]


def _mcts_argv(rows: list[dict], model, tmp_path) -> list[str]:
    """`data prism-mcts` on `rows` (saved as tmp_path/data), every row read, out tmp_path/out."""
    from datasets import Dataset

    data = tmp_path / "data"
    Dataset.from_list(rows).save_to_disk(str(data))
    argv = _args(model, tmp_path / "out")
    argv[argv.index("--data") + 1] = str(data)
    argv[argv.index("--max-samples") + 1] = str(len(rows))
    return argv


def test_prism_mcts_leaves_templated_prompts_out_counted(tmp_path, tagged_model, capsys):  # noqa: F811
    rows = _prism_rows(8)[:3]
    rows[1]["prompt"] = TEMPLATED
    argv = _mcts_argv(rows, tagged_model, tmp_path)
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "prism-mcts prompts: read 3, kept 2, skipped 1" in err
    assert "pretemplated_prompt: 1 (rows 1)" in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["trees"] == 2
    assert summary["prompts_refused"]["reasons"] == {"pretemplated_prompt": 1}


def test_eval_prism_counts_templated_prompts_as_dropped(monkeypatch, capsys):
    import mmalign.vlm.prism.evaluate as prism_eval
    from mmalign.vlm.evaluate import evaluate_toy
    from mmalign.vlm.load import load_vlm

    rows = _prism_rows(8)[:4]
    rows[0]["prompt"] = TEMPLATED
    monkeypatch.setattr(prism_eval, "prism_eval_rows", lambda n, seed: rows)
    results = evaluate_toy(load_vlm("toy:vlm"), "prism", n=4)
    assert results["dropped"] == {"pretemplated_prompt": 1}  # not "not_built"
    assert results["asked"] == 4 and results["n"] == 3
    assert "already in the chat template's format" in capsys.readouterr().err


def test_prism_generation_raises_on_a_templated_prompt():
    from mmalign.vlm.load import load_vlm
    from mmalign.vlm.prism.format import add_stage_tokens
    from mmalign.vlm.prism.generate import StageGenerator, StageRequest, generate_full

    vlm = load_vlm("toy:vlm")
    (image,) = random_images(1, size=32)
    with pytest.raises(RowError, match="already in the chat template's format"):
        generate_full(vlm.model, vlm.processor, [{"prompt": TEMPLATED, "image": image}],
                      max_new_tokens=2, desc="test")  # fmt: skip
    add_stage_tokens(vlm.model, vlm.processor)
    generate = StageGenerator(vlm.model, vlm.processor, max_new_tokens=2, batch_size=2)
    with pytest.raises(RowError, match="BOS token"):
        generate([StageRequest("What does <s> do?", (image,), "", "SUMMARY")], 1)
    assert generate.calls == 0  # refused before any generate call


# ------------------------------------------------------------ weights keys before loading


def test_a_resume_on_retrained_weights_is_refused_before_any_model_loads(
    tmp_path,
    tagged_model,  # noqa: F811
    monkeypatch,
    capsys,
):
    import shutil

    model, judge = tmp_path / "model", tmp_path / "judge"
    shutil.copytree(tagged_model, model)
    shutil.copytree(tagged_model, judge)
    out = tmp_path / "out"
    assert main(_args(model, out, f"vlm:{judge}")) == 0
    calls = _counted(monkeypatch)
    weights = next(judge.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes())  # a new mtime: other weights to the key
    err = _refused(_args(model, out, f"vlm:{judge}"), capsys)
    assert "judge_weights (other judge weights)" in err and "model (other" not in err
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes())
    err = _refused(_args(model, out, f"vlm:{judge}"), capsys)
    assert "model (other weights)" in err
    assert calls == []  # neither the policy nor the judge was loaded to be refused
