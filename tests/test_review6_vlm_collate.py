"""The VLM collator on short answers, bad rows and per-token type ids (review 6).

1. A completion is what the chat template appends after the prompt, for every answer: an
   answer that also occurs inside the template's end-of-turn text ("d" in Qwen's
   `<|im_end|>\\n`, "of" in Idefics3's `<end_of_utterance>\\n`, "s" in `</s>`) was matched
   there (`rfind`), which doubled the end-of-turn token and lost the newline ('d<|im_end|>
   <|im_end|>'), or cut PRISM's open-ended answer inside it ('d<|im_end').
2. A row the collator cannot use raises naming the row and a skip reason
   (`RowError.reason`), which `skip_reason` tells without tokenizing; `validate_rows`
   counts `<image>` placeholders that do not match a row's images.
3. Gemma 3's processor names its image-token mask `token_type_ids`: it is carried (and
   padded) like Qwen2-VL's `mm_token_type_ids`; a tokenizer's own segment ids are not.
"""

from __future__ import annotations

import pytest
from test_vlm_review_realign_embed import tiny_idefics3
from vlm_helpers import random_images

from mmalign.vlm.collate import ChatFormat, PairCollator, RowError, user_content
from mmalign.vlm.load import load_vlm
from mmalign.vlm.tiny import LLAVA_TEMPLATE, make_tokenizer, tiny_llava, tiny_qwen2vl

# answers inside an end-of-turn text: Qwen's, Idefics3's, LLaVA's and toy-vlm's `</s>`
SHORT = ["d", "e", "i", "m", "n", "end", "im", "a", "c", "of", "s", "red"]
FAMILIES = ["toy", "llava", "llava_next", "qwen", "idefics3"]


def _llava_next_processor():
    from transformers import LlavaNextImageProcessor, LlavaNextProcessor

    tok = make_tokenizer(["<s>", "</s>", "<pad>", "<image>"], bos="<s>", eos="</s>", pad="<pad>")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    pins = [[32, 32], [32, 64], [64, 32], [64, 64]]
    images = LlavaNextImageProcessor(size={"shortest_edge": 32}, image_grid_pinpoints=pins,
                                     crop_size={"height": 32, "width": 32})  # fmt: skip
    return LlavaNextProcessor(
        image_processor=images, tokenizer=tok, patch_size=8, chat_template=LLAVA_TEMPLATE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )  # fmt: skip


def family_processors() -> dict:
    """A processor of each family the collator is tested on (tiny, random weights)."""
    return {
        "toy": load_vlm("toy:vlm").processor,
        "llava": tiny_llava()[1],
        "llava_next": _llava_next_processor(),
        "qwen": tiny_qwen2vl()[1],
        "idefics3": tiny_idefics3().processor,
    }


@pytest.fixture(scope="module")
def processors():
    return family_processors()


def _conversation(prompt: str, image, answer: str | None = None) -> list[dict]:
    content = [{"type": "image", "image": image} if c["type"] == "image" else c
               for c in user_content(prompt, 1)]  # fmt: skip
    turns = [{"role": "user", "content": content}]
    if answer is not None:
        turns.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return turns


def _template_ids(processor, prompt: str, image, answer: str) -> tuple[list[int], list[int]]:
    """(whole conversation, completion) token ids from transformers' own
    `apply_chat_template(tokenize=True)`: the completion is the conversation minus the prompt."""
    kw = {"tokenize": True, "return_dict": True, "return_tensors": "pt"}
    head = processor.apply_chat_template(_conversation(prompt, image), add_generation_prompt=True,
                                         **kw)["input_ids"][0].tolist()  # fmt: skip
    full = processor.apply_chat_template(_conversation(prompt, image, answer), **kw)
    ids = full["input_ids"][0].tolist()
    assert ids[: len(head)] == head, "the prompt is not a prefix of the conversation"
    return ids, ids[len(head) :]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("answer", SHORT)
def test_completion_ids_equal_the_chat_template(processors, family, answer):
    processor = processors[family]
    (image,) = random_images(1, size=32)
    prompt = "which option? answer with one letter"
    rejected = "blue" if answer != "blue" else "green"
    row = {"prompt": prompt, "image": image, "chosen": answer, "rejected": rejected}
    batch = PairCollator(processor, ("main",))([row])
    for side, index in (("chosen", 0), ("rejected", 1)):
        s = int(batch.pairs["main"][index][0])
        ours = batch.input_ids[s][batch.attention_mask[s].bool()].tolist()
        completion = batch.input_ids[s][batch.completion_mask[s]].tolist()
        ids, expected = _template_ids(processor, prompt, image, row[side])
        assert completion == expected, (family, side, row[side])
        assert ours == ids, (family, side, row[side])


@pytest.mark.parametrize("family", ["toy", "qwen", "idefics3"])
@pytest.mark.parametrize("answer", SHORT)
def test_open_ended_answers_end_where_the_answer_ends(processors, family, answer):
    """PRISM's unfinished stages: the completion is the answer as the template renders it,
    without any of the end-of-turn text (the closed completion minus its end)."""
    processor = processors[family]
    closed = ChatFormat(processor).render("q?", 1, [answer]).completions[answer]
    open_ = ChatFormat(processor, open_end=lambda a: True).render("q?", 1, [answer])
    text = open_.completions[answer]
    assert text.strip() == answer
    assert closed.startswith(text) and len(closed) > len(text)


def test_a_template_whose_frame_depends_on_the_answer_falls_back_to_the_first_match(processors):
    """Where the text around the answer changes with it, the answer is looked for from the
    start of the completion (the prompt is a prefix): still never inside the end of turn."""
    chat = ChatFormat(processors["qwen"])
    assert chat.answer_end("d<|im_end|>\n", "d", None) == 1
    assert chat.closed("d<|im_end|>\n", "d") == "d<|im_end|>\n"


# ------------------------------------------------------------------------------ bad rows
@pytest.fixture(scope="module")
def toy():
    return load_vlm("toy:vlm").processor


def _rows():
    a, b = random_images(2, size=32)
    ok = {"prompt": "what color?", "image": a, "chosen": "red", "rejected": "blue",
          "retrieved_image": b}  # fmt: skip
    return a, b, ok


@pytest.mark.parametrize(
    ("case", "pairs", "reason", "message"),
    [
        ("missing", ("main", "visual"), "missing_retrieved_image",
         "needs the column 'retrieved_image'"),
        ("two_images", ("main", "visual"), "visual_needs_one_image", "exactly one image"),
        ("no_image", ("main",), "image_placeholder_mismatch",
         "1 <image> placeholders but the row has 0 images"),
        ("missing_blind", ("main", "blind"), "missing_blind", "needs the column 'blind'"),
    ],
)  # fmt: skip
def test_bad_rows_are_named_and_have_a_skip_reason(toy, case, pairs, reason, message):
    a, b, ok = _rows()
    bad = {
        "missing": {**ok, "retrieved_image": None},
        "two_images": {**ok, "prompt": "<image> <image> same?", "images": [a, b]},
        "no_image": {**ok, "prompt": "<image> what color?", "image": None},
        "missing_blind": {**ok, "blind": None},
    }[case]
    collator = PairCollator(toy, pairs, max_length=512)
    good = {**ok, "blind": "no idea"}
    assert collator.problem(good) is None and collator.skip_reason(good) is None
    problem = collator.problem(bad)
    assert isinstance(problem, RowError) and problem.reason == reason
    assert collator.skip_reason(bad) == reason  # told before any tokenization
    with pytest.raises(RowError, match=rf"^row 17: .*{message}") as err:
        collator([good, bad], row_ids=[0, 17])
    assert err.value.reason == reason and err.value.row == 17
    with pytest.raises(RowError, match=rf"^row 9: .*{message}"):
        collator.fits(bad, 9)


def test_too_long_rows_have_their_own_reason(toy):
    _, _, ok = _rows()
    collator = PairCollator(toy, ("main",), max_length=30)
    assert collator.skip_reason({**ok, "chosen": "red " * 40}) == "too_long"


def test_validate_rows_counts_placeholders_that_do_not_match_the_images():
    from datasets import Dataset

    from mmalign.data.schema import validate_rows

    a, b, _ = _rows()
    rows = Dataset.from_list([
        {"prompt": "<image> what color?", "image": a, "chosen": "red", "rejected": "blue"},
        {"prompt": "<image> what color?", "image": None, "chosen": "red", "rejected": "blue"},
        {"prompt": "<image> vs <image>?", "image": b, "chosen": "red", "rejected": "blue"},
        {"prompt": "what color?", "image": None, "chosen": "red", "rejected": "blue"},
    ])  # fmt: skip
    kept, report = validate_rows(rows, "text")
    assert len(kept) == 2 and report.skipped == {"image_placeholder_mismatch": 2}
    assert report.examples["image_placeholder_mismatch"] == [1, 2]
    assert "differ in number" in str(report)
    with pytest.raises(ValueError, match="row 1: image_placeholder_mismatch"):
        validate_rows(rows, "text", strict=True)


# ------------------------------------------------------------------------ token type ids
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<start_of_turn>' + ('model' if m['role'] == "
    "'assistant' else m['role']) + '\n' }}{% for c in m['content'] %}{% if c['type'] == "
    "'image' %}{{ '<start_of_image>' }}{% else %}{{ c['text'] | trim }}{% endif %}{% endfor %}"
    "{{ '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


def _gemma3_processor():
    """Gemma 3's processor over a tiny tokenizer: it returns the image-token mask as
    `token_type_ids` (1 on each image's soft tokens)."""
    from transformers import Gemma3ImageProcessor, Gemma3Processor

    special = ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>",
               "<start_of_image>", "<end_of_image>", "<image_soft_token>"]  # fmt: skip
    tok = make_tokenizer(special, bos="<bos>", eos="<eos>", pad="<pad>")
    tok.add_special_tokens({"additional_special_tokens": special[3:]})
    tok.boi_token, tok.eoi_token, tok.image_token = special[5:]
    tok.boi_token_id, tok.eoi_token_id, tok.image_token_id = tok.convert_tokens_to_ids(special[5:])
    images = Gemma3ImageProcessor(size={"height": 32, "width": 32})
    return Gemma3Processor(image_processor=images, tokenizer=tok, chat_template=GEMMA3_TEMPLATE,
                           image_seq_length=4)  # fmt: skip


def test_gemma3_token_type_ids_are_carried_and_padded():
    """One row (one prompt: Gemma 3's processor reads a flat image list as one prompt's):
    chosen and rejected of different lengths, so the shorter one is padded."""
    processor = _gemma3_processor()
    (image,) = random_images(1, size=32)
    row = {"prompt": "<image> what color?", "image": image, "chosen": "red",
           "rejected": "a blue square on a green background"}  # fmt: skip
    batch = PairCollator(processor, ("main",))([row])
    assert set(batch.extra) == {"token_type_ids"}
    types = batch.extra["token_type_ids"]
    assert types.shape == batch.input_ids.shape
    kw = {"tokenize": True, "return_dict": True, "return_tensors": "pt"}
    for side, index in (("chosen", 0), ("rejected", 1)):
        s = int(batch.pairs["main"][index][0])
        real = batch.attention_mask[s].bool()
        full = processor.apply_chat_template(_conversation(row["prompt"], image, row[side]), **kw)
        assert batch.input_ids[s][real].tolist() == full["input_ids"][0].tolist()
        assert types[s][real].tolist() == full["token_type_ids"][0].tolist()
        assert int(types[s].sum()) == 4  # the image's soft tokens, none in the completion
        assert not types[s][~real].any()  # padding is type 0
    chosen = int(batch.pairs["main"][0][0])
    assert not batch.attention_mask[chosen].all()  # the chosen sequence was padded


def test_a_tokenizers_own_segment_ids_are_not_carried():
    """A `token_type_ids` the tokenizer writes is a text segment id: a LLaVA forward takes
    no such argument, so it stays out of the batch."""
    _, processor = tiny_llava()
    processor.tokenizer.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    (image,) = random_images(1, size=32)
    out = processor(text=["<image>\nhi"], images=[image], return_tensors="pt")
    assert "token_type_ids" in out  # what the processor returns
    row = {"prompt": "hi", "image": image, "chosen": "red", "rejected": "blue"}
    assert PairCollator(processor, ("main",))([row]).extra == {}
