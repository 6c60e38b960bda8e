"""PRISM stage generation (mmalign/vlm/prism/generate.py): rows of one `generate` call stop at
their own stop token, so stages of different depths share a call."""

from __future__ import annotations

import pytest
import torch

from mmalign.vlm.prism.generate import _generate, prompt_text


@pytest.fixture(scope="module")
def vlm():
    from mmalign.vlm.load import load_vlm

    return load_vlm("toy:vlm")


def test_each_row_stops_at_its_own_token(vlm):
    from mmalign.toy.render import render
    from mmalign.toy.world import sample_prompts

    model, processor = vlm.model.eval(), vlm.processor
    # toy-vlm answers in one word: an end token it never writes lets greedy decoding run on
    never = [len(processor.tokenizer) - 1]
    prompts = ["What shape is it?", "What color is the shape?"]
    texts = [prompt_text(processor, p, 1) for p in prompts]
    images = [(render(p),) for p in sample_prompts(2, "train", 0)]
    kw = {"samples": 1, "max_new_tokens": 8, "sample": False, "temperature": 1.0}
    free = [r[0].tolist() for r in _generate(model, processor, texts, images, never, **kw)]
    assert all(len(ids) == 8 and never[0] not in ids for ids in free)
    # row 0 stops at its first token; row 1 at a token it first writes at position >= 2
    late = [t for k, t in enumerate(free[1]) if k >= 2 and free[1].index(t) == k]
    assert late, free[1]
    stops = [free[0][0], late[0]]
    cut = [ids[: ids.index(stop) + 1] for ids, stop in zip(free, stops, strict=True)]
    got = _generate(model, processor, texts, images, never, stops=stops, **kw)
    assert [r[0].tolist() for r in got] == cut
    assert len(cut[0]) == 1 < 3 <= len(cut[1])  # one row ended while the other went on
    # and generation ends once every row has stopped: one forward instead of eight
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        _generate(model, processor, texts, images, never, stops=[f[0] for f in free], **kw)
    finally:
        hook.remove()
    assert len(calls) == 1


def test_two_samples_per_text_stop_at_their_texts_token(vlm):
    """num_return_sequences puts a text's samples side by side: each must get its text's stop
    (near-zero temperature makes every sample the greedy one, so the cut is known)."""
    from mmalign.toy.render import render
    from mmalign.toy.world import sample_prompts

    model, processor = vlm.model.eval(), vlm.processor
    never = [len(processor.tokenizer) - 1]
    prompts = ["What shape is it?", "What color is the shape?"]
    texts = [prompt_text(processor, p, 1) for p in prompts]
    images = [(render(p),) for p in sample_prompts(2, "train", 0)]
    kw = {"max_new_tokens": 8, "temperature": 1.0}
    free = [r[0].tolist() for r in _generate(model, processor, texts, images, never,
                                             samples=1, sample=False, **kw)]  # fmt: skip
    late = [t for k, t in enumerate(free[1]) if k >= 2 and free[1].index(t) == k]
    # text 0's stop also occurs in text 1's output before text 1's own stop, so rows that got
    # the wrong text's stop would come back cut short
    shared = [t for t in free[0] if t in free[1][: free[1].index(late[0])] and t != late[0]]
    assert late and shared, free
    stops = [shared[0], late[0]]
    cut = [ids[: ids.index(stop) + 1] for ids, stop in zip(free, stops, strict=True)]
    torch.manual_seed(0)
    got = _generate(model, processor, texts, images, never, samples=2, sample=True,
                    stops=stops, **{**kw, "temperature": 1e-4})  # fmt: skip
    assert [[r.tolist() for r in rows] for rows in got] == [[cut[0]] * 2, [cut[1]] * 2]


def _left_padded(processor, texts, images, device):
    from mmalign.vlm.prism.generate import _inputs

    tok = processor.tokenizer
    side, tok.padding_side = tok.padding_side, "left"
    try:
        return _inputs(processor, texts, images, device)
    finally:
        tok.padding_side = side


def test_samples_continue_one_shared_prompt_forward(vlm):
    """A search expansion's samples share their prompt: it is encoded once per prompt (image
    included) and each sample continues from the repeated cache. Greedy, the shared path gives
    exactly the tokens of `generate` on the prompts repeated, left padding included."""
    from mmalign.toy.render import render
    from mmalign.toy.world import sample_prompts
    from mmalign.vlm.prism.decode import plain_sampling, sample_shared, shares_prefix

    model, processor = vlm.model.eval(), vlm.processor
    assert shares_prefix(model) and plain_sampling(model)
    prompts = ["What shape is it?", "Tell me, what color is the shape in this picture?", "Hi"]
    texts = [prompt_text(processor, p, 1) for p in prompts]
    images = [(render(p),) for p in sample_prompts(3, "train", 1)]
    inputs = _left_padded(processor, texts, images, model.device)
    assert len(set(inputs["attention_mask"].sum(1).tolist())) == 3  # three lengths: padding
    tok = processor.tokenizer
    never = [len(tok) - 1]
    with torch.no_grad():
        plain = model.generate(**{k: v.repeat_interleave(3, 0) for k, v in inputs.items()},
                               max_new_tokens=6, do_sample=False, eos_token_id=never,
                               pad_token_id=tok.pad_token_id)  # fmt: skip
        images_seen, logit_lengths = [], []
        hooks = [
            model.model.vision_tower.register_forward_hook(
                lambda _m, args, _o: images_seen.append(len(args[0]))
            ),
            model.lm_head.register_forward_hook(lambda *a: logit_lengths.append(a[2].shape[1])),
        ]
        try:
            shared = sample_shared(model, inputs, 3, max_new_tokens=6, eos=never,
                                   pad=tok.pad_token_id, sample=False)  # fmt: skip
        finally:
            for hook in hooks:
                hook.remove()
    assert torch.equal(plain[:, inputs["input_ids"].shape[1] :], shared)
    assert images_seen == [3]  # one image encoding per prompt, not per sample
    assert set(logit_lengths) == {1}  # every forward projects only its last position


def test_finished_rows_leave_the_batch(vlm):
    """A row that writes its stop token is not fed again: later forwards hold only the rows
    still running, and those rows' tokens are the ones they get when nothing stops."""
    from mmalign.toy.render import render
    from mmalign.toy.world import sample_prompts
    from mmalign.vlm.prism.decode import sample_shared

    model, processor = vlm.model.eval(), vlm.processor
    prompts = ["What shape is it?", "What color is the shape?"]
    texts = [prompt_text(processor, p, 1) for p in prompts]
    images = [(render(p),) for p in sample_prompts(2, "train", 0)]
    inputs = _left_padded(processor, texts, images, model.device)
    tok = processor.tokenizer
    never, pad = [len(tok) - 1], tok.pad_token_id
    kw = {"max_new_tokens": 8, "eos": never, "pad": pad, "sample": False}
    assert inputs["attention_mask"][0, 0] == 0  # prompt 0 is the shorter one: left-padded
    free = sample_shared(model, inputs, 2, **kw)
    assert (free != pad).all()  # nothing stops: 8 tokens in every row
    for ends in (0, 1):  # one prompt's rows end at their first token, the other's run on
        stops = torch.tensor(never * 2)
        stops[ends] = int(free[2 * ends, 0])
        rows_fed: list[int] = []
        hook = model.lm_head.register_forward_hook(
            lambda _m, a, _o, fed=rows_fed: fed.append(len(a[0]))
        )
        try:
            got = sample_shared(model, inputs, 2, stops=stops, **kw)
        finally:
            hook.remove()
        assert rows_fed == [2, 4] + [2] * 7  # prefill, then 4 rows, then the 2 still running
        done, running = slice(2 * ends, 2 * ends + 2), slice(2 - 2 * ends, 4 - 2 * ends)
        assert torch.equal(got[done, 0], free[done, 0]) and (got[done, 1:] == pad).all()
        assert torch.equal(got[running], free[running])


def test_a_generation_config_with_processors_is_not_plain(vlm):
    """`sample_shared` applies only a temperature: a model whose generation config would make
    `generate` apply more (a repetition penalty, suppressed tokens) must take `generate`."""
    import copy

    from mmalign.vlm.prism.decode import plain_sampling

    model = vlm.model
    assert plain_sampling(model)
    saved = copy.deepcopy(model.generation_config)
    try:
        model.generation_config.repetition_penalty = 1.3
        assert not plain_sampling(model)
        model.generation_config = copy.deepcopy(saved)
        model.generation_config.suppress_tokens = [5]
        assert not plain_sampling(model)
    finally:
        model.generation_config = saved
    assert plain_sampling(model)
