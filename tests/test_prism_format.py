"""PRISM-CoT (Li et al. 2025): the stage parser, the stage tags as special tokens that survive
saving and reloading with a LoRA adapter, open-ended step prefixes, and the toy set."""

from __future__ import annotations

import random

import pytest
import torch

from mmalign.data.prism_cot import (
    STAGES,
    final_answer,
    format_cot,
    is_partial,
    parse_stages,
)

FULL = {
    "PROBLEM": "hurt someone",
    "CAPTION": "red circle, blue background",
    "REASONING": "a harmful request: refuse",
    "OUTPUT": "I cannot help with that request.",
}


def test_parser_splits_a_compliant_answer():
    parsed = parse_stages("  " + format_cot(FULL) + "\n")
    assert parsed.compliant and parsed.problems == []
    assert parsed.stages == FULL and parsed.output == FULL["OUTPUT"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (format_cot({k: v for k, v in FULL.items() if k != "CAPTION"}), "missing stage(s) CAPTION"),
        ("<|PROBLEM|>a<|/PROBLEM|><|CAPTION|>b", "CAPTION is never closed"),
        ("<|CAPTION|>b<|/CAPTION|>" + format_cot(FULL), "appears twice"),
        ("<|CAPTION|>b<|/CAPTION|><|PROBLEM|>a<|/PROBLEM|>", "out of order"),
        ("hi " + format_cot(FULL), "text outside the stages"),
        (format_cot(FULL) + " bye", "text outside the stages at the end"),
        ("<|PROBLEM|>a<|/CAPTION|>", "inside PROBLEM"),
        ("just an answer", "missing stage(s)"),
    ],
)
def test_parser_names_what_breaks_the_format(text, problem):
    parsed = parse_stages(text)
    assert not parsed.compliant
    assert any(problem in p for p in parsed.problems), parsed.problems


def test_final_answer_and_partial_prefixes():
    assert final_answer(format_cot(FULL)) == FULL["OUTPUT"]
    assert final_answer("red") == "red"  # a model without the format answers directly
    assert is_partial(format_cot({"PROBLEM": "x", "CAPTION": "y"}))
    assert not is_partial(format_cot(FULL)) and not is_partial("red")
    assert not is_partial("<|PROBLEM|>x")


# ------------------------------------------------------------------------- special tokens


def _toy_vlm():
    from mmalign.vlm.load import load_vlm

    return load_vlm("toy:vlm")


def _greedy(model, processor, rows, n=24):
    from mmalign.vlm.prism.generate import generate_full

    return generate_full(model, processor, rows, max_new_tokens=n, desc="test")


def test_stage_tokens_survive_save_and_reload(tmp_path):
    """A LoRA adapter with trained tag rows, saved: PeftModel.from_pretrained on a base grown to
    the saved processor's vocabulary (and load_vlm on the folder) generates exactly as the
    trained model did, tags included."""
    from peft import PeftModel
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from mmalign.toy.paths import model_path
    from mmalign.train.config import LoraConfig
    from mmalign.vlm.load import load_vlm
    from mmalign.vlm.lora import add_lora, save_adapter
    from mmalign.vlm.prism.format import TAGS, add_stage_tokens, match_vocab, tag_ids

    vlm = _toy_vlm()
    report = add_stage_tokens(vlm.model, vlm.processor)
    assert report.added == list(TAGS) and report.rows_after == report.rows_before + 8
    ids = tag_ids(vlm.processor)
    assert len(set(ids.values())) == 8
    assert vlm.tokenizer("<|CAPTION|>red<|/CAPTION|>", add_special_tokens=False)["input_ids"][0] \
        == ids["<|CAPTION|>"]  # fmt: skip
    model = add_lora(vlm.model, LoraConfig(rank=4), trainable_tokens=list(ids.values()))
    torch.manual_seed(0)
    with torch.no_grad():  # "training": move the adapter and make the tags likely
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * (3.0 if "trainable_tokens" in name else 0.05))
    model.eval()
    from mmalign.toy.datasets import build_dataset

    build_dataset("prism", tmp_path / "data", n=6, seed=1)
    from datasets import load_from_disk

    rows = load_from_disk(str(tmp_path / "data" / "pairs"))
    rows = [rows[i] for i in range(len(rows))]
    trained = _greedy(model, vlm.processor, rows)
    assert any("<|" in a for a in trained), "the test needs generations that use the tags"
    folder = save_adapter(model, vlm.processor, tmp_path / "run")

    processor = AutoProcessor.from_pretrained(folder)
    base = LlavaForConditionalGeneration.from_pretrained(model_path("vlm")).eval()
    match_vocab(base, processor)
    reloaded = PeftModel.from_pretrained(base, str(folder)).eval()
    assert _greedy(reloaded, processor, rows) == trained
    again = load_vlm(folder)  # mmalign's loader: the adapter's processor, the base grown
    assert _greedy(again.model, again.processor, rows) == trained


def test_a_tokenizer_that_has_the_tags_is_left_alone():
    from mmalign.vlm.prism.format import add_stage_tokens

    vlm = _toy_vlm()
    first = add_stage_tokens(vlm.model, vlm.processor)
    second = add_stage_tokens(vlm.model, vlm.processor)
    assert second.added == [] and sorted(second.present) == sorted(first.added)
    assert second.rows_before == second.rows_after == first.rows_after
    assert "already present: 8" in str(second)


def test_tag_ids_names_missing_tags():
    from mmalign.vlm.prism.format import tag_ids

    with pytest.raises(ValueError, match="add the PRISM stage tags"):
        tag_ids(_toy_vlm().processor)


def test_open_ended_prefix_has_no_end_of_turn_and_chosen_only_skips_rejected():
    from mmalign.vlm.collate import PairCollator
    from mmalign.vlm.prism.format import add_stage_tokens

    vlm = _toy_vlm()
    add_stage_tokens(vlm.model, vlm.processor)
    eos = vlm.tokenizer.eos_token_id
    partial = format_cot({"PROBLEM": "hurt someone"})
    image = torch.rand(3, 32, 32)
    row = {"prompt": "Q?", "chosen": partial, "rejected": format_cot({"PROBLEM": "x"}),
           "image": image}  # fmt: skip
    batch = PairCollator(vlm.processor, open_end=is_partial)([row])
    for i in range(2):
        ids = batch.input_ids[i][batch.attention_mask[i].bool()].tolist()
        assert ids[-1] != eos
    full = PairCollator(vlm.processor, open_end=is_partial)([{**row, "chosen": format_cot(FULL)}])
    assert full.input_ids[0][full.attention_mask[0].bool()].tolist()[-1] == eos
    only = PairCollator(vlm.processor, chosen_only=True)([row])
    assert only.input_ids.shape[0] == 1
    assert only.pairs["main"][0].tolist() == only.pairs["main"][1].tolist() == [0]


# ---------------------------------------------------------------------------- toy:prism


def test_toy_prism_rule_and_answers():
    from mmalign.toy.prism import ATTACK_WRAPPERS, TRAIN_WRAPPERS, hazard, sample_prism
    from mmalign.toy.qa import REFUSAL
    from mmalign.toy.world import ToyPrompt

    assert hazard(ToyPrompt("triangle", "red", "blue")) == "a sharp triangle"
    assert hazard(ToyPrompt("circle", "green", "blue")) == "green is poison"
    assert hazard(ToyPrompt("circle", "red", "blue")) is None
    items = sample_prism(400, "train", random.Random(3))
    image = [it for it in items if it.category == "image"]
    assert image and {it.harmful for it in image} == {True, False}
    for it in items:
        parsed = parse_stages(it.chosen)
        assert parsed.compliant and list(parsed.stages) == list(STAGES)
        assert parsed.stages["CAPTION"].startswith(f"{it.prompt.color} {it.prompt.shape}")
        if it.category == "image":
            assert it.harmful == (hazard(it.prompt) is not None)
        else:
            assert it.harmful == (it.category == "text")
        assert (parsed.output == REFUSAL) == it.harmful
        assert (final_answer(it.rejected) == REFUSAL) != it.harmful  # the wrong verdict
        if it.wrapped:
            assert any(it.request.startswith(w.split("{")[0]) for w in TRAIN_WRAPPERS)
    held = sample_prism(200, "heldout", random.Random(3), attacks="heldout", wrap_share=1.0)
    assert all(any(it.request.startswith(w.split("{")[0]) for w in ATTACK_WRAPPERS) for it in held)
    train_requests = {it.request for it in items}
    assert not train_requests & {it.request for it in held}


def test_plain_questions_reason_with_the_fact_they_ask_for():
    """A plain question's REASONING states the caption's fact the OUTPUT answers with
    (data version 3); presence questions compare the asked and the seen object attribute by
    attribute."""
    from mmalign.toy.prism import sample_prism

    items = [it for it in sample_prism(400, "train", random.Random(5)) if it.category == "qa"]
    kinds = {it.intent for it in items}
    assert kinds == {"color", "shape", "background", "presence"}
    for it in items:
        reasoning, output = it.stages["REASONING"], it.stages["OUTPUT"]
        assert reasoning.endswith(": answer")
        fact = reasoning.removesuffix(": answer")
        if it.intent == "presence":
            color, shape = fact.split(", ")
            c_asked, _, c_seen, c_verdict = color.split()[1:]
            s_asked, _, s_seen, s_verdict = shape.split()[1:]
            assert (c_seen, s_seen) == (it.prompt.color, it.prompt.shape)
            assert f"{c_asked} {s_asked}" in it.request  # "Is there a green cross?"
            assert c_verdict == ("same" if c_asked == c_seen else "differs")
            assert s_verdict == ("same" if s_asked == s_seen else "differs")
            assert output == ("yes" if c_verdict == s_verdict == "same" else "no")
        else:
            assert fact.split()[-1] == output  # "the shape is red" -> "red"
            assert output == getattr(it.prompt, it.intent)
    assert {it.stages["OUTPUT"] for it in items if it.intent == "presence"} == {"yes", "no"}


def test_toy_prism_builds_deterministically(tmp_path):
    from datasets import load_from_disk

    from mmalign.toy.datasets import KINDS, build_dataset

    assert "prism" in KINDS
    a = build_dataset("prism", tmp_path / "a", n=40, seed=5)
    build_dataset("prism", tmp_path / "b", n=40, seed=5)
    build_dataset("prism", tmp_path / "c", n=40, seed=6)
    ra, rb, rc = (load_from_disk(str(tmp_path / k / "pairs")) for k in "abc")
    assert a["rows"] == 40 and ra.to_list() == rb.to_list() and ra.to_list() != rc.to_list()
    plain = build_dataset("prism", tmp_path / "p", n=40, seed=5, format="plain")
    rp = load_from_disk(str(tmp_path / "p" / "pairs"))
    assert plain["rows"] == 40
    assert [final_answer(c) for c in ra["chosen"]] == rp["chosen"]
    with pytest.raises(ValueError, match="format must be"):
        build_dataset("prism", tmp_path / "x", n=4, format="json")


def test_eval_scores_reference_and_unsafe_answers(tmp_path):
    from mmalign.toy.datasets import build_dataset
    from mmalign.vlm.prism.evaluate import score_answers

    build_dataset("prism", tmp_path, n=60, seed=2, prompt_split="heldout", attacks="heldout",
                  wrap_share=0.5)  # fmt: skip
    from datasets import load_from_disk

    rows = load_from_disk(str(tmp_path / "pairs")).to_list()
    perfect = score_answers(rows, [r["chosen"] for r in rows])
    assert perfect["attack_success_rate"] == 0 and perfect["benign_accuracy"] == 1
    assert perfect["benign_refusal_rate"] == 0 and perfect["format_compliance"] == 1
    wrong = score_answers(rows, [final_answer(r["rejected"]) for r in rows])  # plain, all wrong
    assert wrong["attack_success_rate"] == 1 and wrong["benign_refusal_rate"] == 1
    assert wrong["format_compliance"] == 0
    cut = score_answers(rows, ["I cannot help" for _ in rows])  # a refusal cut short refuses
    assert cut["attack_success_rate"] == 0 and cut["benign_refusal_rate"] == 1
    assert wrong["plain_attack_success_rate_n"] + wrong["wrapped_attack_success_rate_n"] \
        == wrong["attack_success_rate_n"] > 0  # fmt: skip


def test_heldout_rephrasings_are_new_sentences_of_known_words():
    """Held-out requests are sentences training never shows, made of words it does show (a
    toy model cannot know an unseen synonym), and every intent has several training frames."""
    from mmalign.toy.prism import HELDOUT_FRAMES, IMAGE_INTENTS, TEXT_INTENTS, TRAIN_FRAMES

    assert len(TRAIN_FRAMES) >= 3 and not set(TRAIN_FRAMES) & set(HELDOUT_FRAMES)
    train_words, held = set(), []
    for intent in TEXT_INTENTS + IMAGE_INTENTS:
        train, heldout = intent.phrasings("train"), intent.phrasings("heldout")
        assert heldout and not set(train) & set(heldout)
        train_words |= {w for t in train for w in t.lower().replace("?", " ").split()}
        held += heldout
    words = {w for t in held for w in t.lower().replace("?", " ").split()}
    assert len(words - train_words) <= 3, words - train_words  # only the frames' own words


def test_toy_prism_cache_key_follows_the_data_version(monkeypatch):
    from mmalign.toy.cache import toy_data_folder
    from mmalign.toy.datasets import BUILDERS

    before = toy_data_folder("prism", {"n": 8})
    monkeypatch.setattr(BUILDERS["prism"], "data_version", 999)
    assert toy_data_folder("prism", {"n": 8}) != before


def test_stage_prefill_starts_like_the_training_answers():
    """The search prefills prompt + the template's answer lead + stages; its tokens equal the
    training sequence's (prompt ids, then the completion's), so the first stage is sampled in
    the context SFT trained."""
    from mmalign.vlm.collate import ChatFormat
    from mmalign.vlm.prism.format import add_stage_tokens
    from mmalign.vlm.prism.generate import answer_lead, prompt_text

    vlm = _toy_vlm()
    add_stage_tokens(vlm.model, vlm.processor)
    tok = vlm.processor.tokenizer
    lead = answer_lead(vlm.processor)
    assert lead == " "  # LLaVA-1.5's "ASSISTANT: answer"
    prefix = format_cot({"PROBLEM": "x"}) + "<|CAPTION|>"
    mine = tok(prompt_text(vlm.processor, "q?", 1) + lead + prefix, add_special_tokens=False)
    rendered = ChatFormat(vlm.processor).render("q?", 1, [prefix])
    train = tok(rendered.prompt, add_special_tokens=False)["input_ids"] + tok(
        rendered.completions[prefix], add_special_tokens=False)["input_ids"]  # fmt: skip
    assert train[: len(mine["input_ids"])] == mine["input_ids"]
