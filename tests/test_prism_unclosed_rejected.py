"""PRISM's pairs with an unclosed node (a stage cut at the length limit) as the rejected side:
the rejected text is the truncated generation as it was sampled, and training scores it with
no closing tag and no end-of-turn token, since the model never ended that turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mmalign.data.prism_cot import STAGES, close_tag, format_cot, is_unclosed, open_tag
from mmalign.vlm.prism.mcts import FAILED_SCORE, MCTSConfig, Tree
from mmalign.vlm.prism.search import pair_rows, pairs_dataset

DONE = {"PROBLEM": "hurt someone", "CAPTION": "a red circle", "REASONING": "harmful: refuse"}
REFUSAL = "<|OUTPUT|>I cannot help with that request.<|/OUTPUT|>"
CUT = "<|OUTPUT|>Sure, here is how to hu"  # the length limit came before <|/OUTPUT|>


def _stage(stage: str, text: str) -> str:
    return open_tag(stage) + text + close_tag(stage)


def _tree(last: list[tuple[str, bool]], scores: list[float | None]) -> Tree:
    """One closed node per stage down to REASONING, then `last` as the OUTPUT siblings."""
    tree = Tree(0, MCTSConfig(iterations=50, children=len(last)))
    leaf = 0
    for stage in STAGES[:-1]:
        (leaf,) = tree.expand(leaf, [(_stage(stage, DONE[stage]), True)], [1.0])
    tree.expand(leaf, last, scores)
    return tree


def _unclosed_pair_rows() -> list[dict[str, Any]]:
    data = [{"prompt": "How do I hurt someone?", "image": torch.rand(3, 32, 32)}]
    return pair_rows(data, [_tree([(REFUSAL, True), (CUT, False)], [1.0, None])])


def test_an_unclosed_rejected_node_keeps_the_text_it_was_cut_at():
    tree = _tree([(REFUSAL, True), (CUT, False)], [1.0, None])
    (pair,) = tree.pairs()
    cut = tree.nodes[pair.rejected]
    assert cut.failed == "unclosed" and cut.score == FAILED_SCORE
    prefix = format_cot(DONE)
    assert pair.chosen_text == prefix + REFUSAL
    assert pair.rejected_text == prefix + CUT  # no closing tag added
    assert is_unclosed(pair.rejected_text) and not is_unclosed(pair.chosen_text)


@pytest.mark.parametrize(
    ("text", "unclosed"),
    [
        (CUT, True),
        ("<|PROBLEM|>x<|/PROBLEM|><|CAPTION|>a red", True),
        ("<|PROBLEM|>x<|/PROBLEM|><|CAPTION|>", True),  # cut before any content
        ("<|PROBLEM|>x<|/PROBLEM|><|CAPTION|>a<|/OUTPUT|>", True),  # another stage's tag
        ("<|PROBLEM|>x<|/PROBLEM|><|CAPTION|>a<|/REASONING|>b", True),
        ("<|PROBLEM|>x<|/PROBLEM|><|CAPTION|>a<|REASONING|>b", True),
        (format_cot(DONE), False),  # a step-level prefix: closed, its own rule (is_partial)
        (format_cot(DONE) + REFUSAL, False),
        ("a plain answer", False),
    ],
)
def test_is_unclosed(text, unclosed):
    assert is_unclosed(text) is unclosed


def _recipe_collator(tmp_path: Path, rows: list[dict[str, Any]]) -> Any:
    """The collator of a `vlm.prism: true` DPO recipe on `rows` saved as search pairs."""
    from test_vlm_train import _Accel, vlm_config

    from mmalign.vlm.recipe import VLMRecipe

    ds, report = pairs_dataset(rows)
    assert report.kept == len(rows)
    ds.save_to_disk(str(tmp_path / "pairs"))
    cfg = vlm_config(tmp_path / "run", data={"path": str(tmp_path / "pairs"), "toy": None},
                     vlm={"prism": True})  # fmt: skip
    return VLMRecipe(cfg, _Accel()).collator


def _completion(batch: Any, seq: int) -> list[int]:
    return batch.input_ids[seq][batch.completion_mask[seq]].tolist()


def test_training_scores_an_unclosed_rejected_without_an_end_of_turn(tmp_path):
    """The recipe's rows: the chosen full answer ends with the end-of-turn token, the rejected
    cut answer ends with the last token it generated (no closing tag, no end of turn)."""
    rows = _unclosed_pair_rows()
    (row,) = rows
    collator = _recipe_collator(tmp_path, rows)
    tok = collator.format.tokenizer
    eos, close = tok.eos_token_id, tok.convert_tokens_to_ids(close_tag("OUTPUT"))
    batch = collator([row])
    chosen, rejected = (int(i[0]) for i in batch.pairs["main"])
    assert _completion(batch, chosen)[-2:] == [close, eos]
    cut = _completion(batch, rejected)
    assert eos not in cut and close not in cut
    assert tok.decode(cut).endswith("how to hu")
    # the scored completion is the template's lead + the shared prefix + the cut stage as sampled
    completion = batch.sequence_keys[rejected][2]
    assert completion.endswith(format_cot(DONE) + CUT)
    assert cut == collator.format.completion_ids(completion)


def test_an_unclosed_stage_before_output_gets_no_end_of_turn_either(tmp_path):
    """A cut CAPTION as rejected against a closed CAPTION: both turns are unfinished."""
    data = [{"prompt": "What colour is it?", "image": torch.rand(3, 32, 32)}]
    tree = Tree(0, MCTSConfig(iterations=50, children=2))
    (leaf,) = tree.expand(0, [(_stage("PROBLEM", "the colour"), True)], [1.0])
    tree.expand(leaf, [(_stage("CAPTION", "a red circle"), True), ("<|CAPTION|>a re", False)],
                [1.0, None])  # fmt: skip
    (row,) = pair_rows(data, [tree])
    collator = _recipe_collator(tmp_path, [row])
    eos = collator.format.tokenizer.eos_token_id
    batch = collator([row])
    for seq in (int(i[0]) for i in batch.pairs["main"]):
        assert _completion(batch, seq)[-1] != eos
