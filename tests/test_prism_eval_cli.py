"""`mmalign eval vlm RUN --task prism` end to end (toy-vlm, and a PRISM SFT training run), and
the `vlm:<model>` judge of the PRISM search (mmalign/vlm/prism/judges.py): its verdicts equal
(p_yes - p_no) / (p_yes + p_no) of the model's next token, and a malformed item, a failing
forward or a NaN verdict are counted failures (judge_error / judge_out_of_range), never fatal."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mmalign.cli import main
from mmalign.data.prism_cot import STAGES, close_tag, open_tag, parse_stages
from mmalign.toy.prism import is_refusal
from mmalign.vlm.collate import ChatFormat
from mmalign.vlm.prism.evaluate import prism_eval_rows
from mmalign.vlm.prism.generate import StageSample, prompt_text
from mmalign.vlm.prism.judges import JUDGE_PROMPT, JudgeItem, VLMJudge, check_verdict, make_judge
from mmalign.vlm.prism.mcts import MCTSConfig
from mmalign.vlm.prism.search import Search

RATES = ("attack_success_rate", "benign_accuracy", "benign_refusal_rate", "format_compliance")


def _eval(tmp_path, model: str, n: int, capsys) -> tuple[dict, str]:
    out = tmp_path / "prism.json"
    assert main(["eval", "vlm", model, "--task", "prism", "--n", str(n), "--out", str(out)]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out


def _check_counts(results: dict, n: int) -> None:
    """The rates' groups partition the --n rows as documented."""
    assert results["task"] == "prism" and results["n"] == n
    forbidden, benign = results["attack_success_rate_n"], results["benign_accuracy_n"]
    assert forbidden + benign == n
    assert results["benign_refusal_rate_n"] == benign
    assert results["plain_attack_success_rate_n"] + results["wrapped_attack_success_rate_n"] \
        == forbidden  # fmt: skip
    assert results["text_attack_success_rate_n"] + results["image_attack_success_rate_n"] \
        == forbidden  # fmt: skip
    assert results["format_compliance_n"] == n
    assert len(results["examples"]) == min(n, 12)


def _norm(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


def test_eval_vlm_prism_on_toy_vlm_writes_the_rates(tmp_path, capsys):
    n = 12
    results, printed = _eval(tmp_path, "toy:vlm", n, capsys)
    _check_counts(results, n)
    for key in RATES:
        assert results[key] is not None and 0.0 <= results[key] <= 1.0, key
        assert f"{key}: " in printed
        assert 0 < results[f"{key}_n"] <= n
    assert "results: " in printed
    # n <= 12: every row is an example, so the rates can be recounted from what was answered.
    # toy-vlm has no stage tags: its whole reply is the final answer, never the format.
    examples = results["examples"]
    forbidden = [e for e in examples if e["source"].startswith("forbidden:")]
    benign = [e for e in examples if e["source"].startswith("benign:")]
    assert len(forbidden) == results["attack_success_rate_n"] and len(benign) + len(forbidden) == n
    assert all("<|OUTPUT|>" not in e["got"] for e in examples)
    assert results["format_compliance"] == 0.0
    attacks = sum(not is_refusal(e["got"]) for e in forbidden) / len(forbidden)
    assert results["attack_success_rate"] == pytest.approx(attacks)
    expected = [parse_stages(e["expected"]).output for e in benign]
    right = sum(_norm(e["got"]) == _norm(x) for e, x in zip(benign, expected, strict=True))
    assert results["benign_accuracy"] == pytest.approx(right / len(benign))
    refused = sum(is_refusal(e["got"]) for e in benign) / len(benign)
    assert results["benign_refusal_rate"] == pytest.approx(refused)
    se = results["benign_accuracy_se"]
    p = results["benign_accuracy"]
    assert se == pytest.approx(math.sqrt(p * (1 - p) / len(benign)))


def test_eval_vlm_prism_on_a_prism_sft_run(tmp_path, capsys):
    """RUN a training output_dir (1 step of configs/toy/prism_sft.yaml, whose tokenizer has the
    stage tags): its saved model answers. Three rows, then one: a group with no rows has no
    rate (JSON null), printed n/a."""
    run = tmp_path / "run"
    assert main(["train", "configs/toy/prism_sft.yaml", f"output_dir={run}", "data.toy.n=8",
                 "train.max_steps=1", "train.batch_size=4"]) == 0  # fmt: skip
    assert (run / "mmalign_run.json").is_file()
    capsys.readouterr()
    for n in (3, 1):
        results, printed = _eval(tmp_path, str(run), n, capsys)
        _check_counts(results, n)
        for key in RATES:
            if results[f"{key}_n"] == 0:
                assert results[key] is None and f"{key}: n/a (n=0)" in printed
            else:
                assert 0.0 <= results[key] <= 1.0, key
        compliant = sum(parse_stages(e["got"]).compliant for e in results["examples"])
        assert results["format_compliance"] == pytest.approx(compliant / n)
    # one row is forbidden or harmless: the other group is empty
    assert (results["attack_success_rate"] is None) != (results["benign_accuracy"] is None)


# ----------------------------------------------------------------------------- the vlm judge


@pytest.fixture(scope="module")
def judge() -> VLMJudge:
    j = make_judge("vlm:toy:vlm")
    assert isinstance(j, VLMJudge) and j.name == "vlm:toy:vlm"
    return j


@pytest.fixture(scope="module")
def items() -> list[JudgeItem]:
    """Toy:prism requests (with images) with a finished reference answer, a refusal, a wrong
    answer and a partial chain (one stage)."""
    data = prism_eval_rows(4, seed=7)
    rows = [data[i] for i in range(len(data))]
    out = [JudgeItem(r, r["chosen"], "OUTPUT") for r in rows]
    first = rows[0]
    refusal = open_tag("OUTPUT") + "I cannot help with that request." + close_tag("OUTPUT")
    out.append(JudgeItem(first, refusal, "OUTPUT"))
    out.append(JudgeItem(first, open_tag("OUTPUT") + "blue" + close_tag("OUTPUT"), "OUTPUT"))
    problem = parse_stages(first["chosen"]).stages["PROBLEM"]
    out.append(JudgeItem(first, open_tag("PROBLEM") + problem + close_tag("PROBLEM"), "PROBLEM"))
    return out


def _answer_token(vlm, word: str) -> int:
    """The first token of the assistant answer `word` as training tokenizes it (ChatFormat's
    completion): the token the model emits when it answers `word`."""
    fmt = ChatFormat(vlm.processor)
    return fmt.completion_ids(fmt.render("q", 0, [word]).completions[word])[0]


def _direct(vlm, item: JudgeItem) -> tuple[float, int]:
    """(p_yes - p_no) / (p_yes + p_no) of one unpadded forward, and the greedy next token."""
    images = [item.row["image"].convert("RGB")]
    question = JUDGE_PROMPT.format(request=item.row["prompt"], answer=item.text)
    text = prompt_text(vlm.processor, question, len(images))
    inputs = vlm.processor(text=[text], images=images, return_tensors="pt")
    with torch.no_grad():
        p = vlm.model(**inputs).logits[0, -1].double().softmax(-1)
    yes, no = p[_answer_token(vlm, "yes")], p[_answer_token(vlm, "no")]
    return float((yes - no) / (yes + no)), int(p.argmax())


def test_vlm_judge_verdicts_are_the_models_yes_no_odds(judge, items):
    no_id = _answer_token(judge.vlm, "no")
    assert (judge.yes, judge.no) == (_answer_token(judge.vlm, "yes"), no_id)
    got = judge(items)
    assert len(got) == len(items)
    answered_no = 0
    for item, value in zip(items, got, strict=True):
        assert type(value) is float and -1.0 <= value <= 1.0
        assert check_verdict(value) == (value, None)
        direct, greedy = _direct(judge.vlm, item)
        assert value == pytest.approx(direct, abs=1e-4)  # left padding changes nothing
        if greedy == no_id:  # the model's own answer is "no": the verdict says so
            answered_no += 1
            assert value < 0
    assert answered_no > 0  # toy-vlm answers most yes/no questions "no": not vacuous
    assert len({round(v, 6) for v in got}) > 1  # the verdict depends on the item
    judge.batch_size = 2  # chunks of 2 (the last one shorter) give the same verdicts
    try:
        assert judge(items) == pytest.approx(got, abs=1e-4)
    finally:
        judge.batch_size = 32
    assert judge([]) == []
    with pytest.raises(ValueError, match="needs a model"):
        make_judge("vlm:")


def test_vlm_judge_failures_are_counted_never_fatal(judge, items, monkeypatch):
    good = items[0]
    two_places = {**good.row, "prompt": "<image> and <image>: what is it?"}  # one image
    no_prompt = {k: v for k, v in good.row.items() if k != "prompt"}
    bad_image = {**good.row, "image": b"not an image"}
    batch = [good, JudgeItem(two_places, good.text, "OUTPUT"),
             JudgeItem(no_prompt, good.text, "OUTPUT"), JudgeItem(bad_image, good.text, "OUTPUT"),
             items[1]]  # fmt: skip
    got = judge(batch)
    assert len(got) == len(batch)
    assert isinstance(got[1], ValueError) and "placeholders" in str(got[1])
    assert isinstance(got[2], KeyError) and isinstance(got[3], Exception)
    assert [check_verdict(v)[1] for v in got] == [None, "judge_error", "judge_error",
                                                  "judge_error", None]  # fmt: skip
    # the malformed items left the good ones' verdicts as they are alone
    assert got[0] == pytest.approx(judge([good])[0], abs=1e-4)
    assert got[4] == pytest.approx(judge([items[1]])[0], abs=1e-4)
    assert all(isinstance(v, Exception) for v in judge(batch[1:4]))  # a chunk with none left

    # a forward that fails: every item of its chunk is a judge_error, the call returns
    def fail(module, args, kwargs):
        raise RuntimeError("out of memory (simulated)")

    handle = judge.vlm.model.register_forward_pre_hook(fail, with_kwargs=True)
    try:
        got = judge(items[:3])
    finally:
        handle.remove()
    assert [check_verdict(v) for v in got] == [(None, "judge_error")] * 3

    # logits that are NaN: a NaN verdict, counted as out of range
    def nan(module, args, output):
        output.logits.fill_(float("nan"))

    handle = judge.vlm.model.register_forward_hook(nan)
    try:
        got = judge(items[:2])
    finally:
        handle.remove()
    assert all(isinstance(v, float) and math.isnan(v) for v in got)
    assert [check_verdict(v) for v in got] == [(None, "judge_out_of_range")] * 2


class StageWords:
    """Closed stages, two distinct samples per request (no model: the judge is under test)."""

    temperature, max_new_tokens, batch_size = 1.0, 8, 8

    def __call__(self, requests, samples):
        return [[StageSample(open_tag(r.stage) + f"word{k}" + close_tag(r.stage), True, 3)
                 for k in range(samples)] for r in requests]  # fmt: skip


def test_a_search_with_the_vlm_judge_counts_a_malformed_row(tmp_path, judge, items):
    """As with the other judges (test_prism_mcts: the failures counted, never fatal): a row the
    judge cannot read (two <image> places, one image) fails each of its judge calls, the
    search goes on, and the other rows' trees grow with the judge's values."""
    rows = [items[0].row, {**items[1].row, "prompt": "<image> and <image>: what is it?"},
            items[2].row]  # fmt: skip
    config = MCTSConfig(iterations=3, children=2, max_depth=len(STAGES))
    trees = Search(rows, StageWords(), judge, config, tmp_path, trees_per_batch=3,
                   progress=False).run()  # fmt: skip
    assert [t.row for t in trees] == [0, 1, 2]
    bad = trees[1]
    assert bad.stats["judge_error"] == 2 and bad.stats["skipped"] == 2  # both children
    assert len(bad.nodes) == 1 and bad.stats["dead_ends"] == 1  # only the root: cannot grow
    for tree in (trees[0], trees[2]):
        assert tree.stats["judge_error"] == 0 and tree.stats["judge_out_of_range"] == 0
        grown = tree.nodes[1:]
        assert len(grown) >= 2
        assert all(-1.0 <= node.score <= 1.0 and node.failed is None for node in grown)
