"""toy-vlm's tokenizer: a byte-level BPE trained on the toy QA text, with LLaVA-1.5's chat format
`USER: <image>\\n{question} ASSISTANT: {answer}</s>`."""

from __future__ import annotations

from collections.abc import Sequence

from ...qa import FORBIDDEN_REQUESTS, PHRASINGS, QUESTION_TYPES, REFUSAL, object_phrase
from ...world import COLORS, SHAPES

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", IMAGE_TOKEN)  # ids 0..3, in this order

# LLaVA-1.5's conversation format. Images come before the text of a turn; an assistant turn ends
# with EOS so generation stops by itself; `{% generation %}` marks the tokens a trainer scores
# (`return_assistant_tokens_mask=True`). BOS is added by the tokenizer, not by the template.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ message['content'] if message['content'] is string else "
    "message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') "
    "| join(' ') }}{{ ' ' }}"
    "{%- else -%}"
    "{{ message['role'].upper() + ': ' }}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}"
    "{%- for c in message['content'] | selectattr('type', 'equalto', 'image') -%}"
    "{{ '<image>\\n' }}{%- endfor -%}"
    "{%- set text = message['content'] | selectattr('type', 'equalto', 'text') "
    "| map(attribute='text') | join(' ') -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{ text + eos_token }}{% endgeneration %}"
    "{%- else -%}{{ text + ' ' }}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)


def qa_corpus() -> list[str]:
    """Every question and answer, in chat format: the tokenizer's training text."""
    questions = [q for k in QUESTION_TYPES if k != "presence" for q in PHRASINGS[k]]
    questions += [
        t.format(obj=object_phrase(c, s))
        for t in PHRASINGS["presence"]
        for c in COLORS
        for s in SHAPES
    ]
    answers = [*COLORS, *SHAPES, "yes", "no"]
    lines = [f"USER: {IMAGE_TOKEN}\n{q} ASSISTANT: {a}" for q in questions for a in answers[:4]]
    lines += [f"USER: {q} ASSISTANT: {a}" for q in questions[:4] for a in answers]
    for request, comply in FORBIDDEN_REQUESTS:
        for i, color in enumerate(COLORS):  # every colour and shape word at least once
            fill = {"color": color, "shape": SHAPES[i % len(SHAPES)], "background": color,
                    "number": 100}  # fmt: skip
            lines += [f"USER: {IMAGE_TOKEN}\n{request.format(**fill)} ASSISTANT: {a}"
                      for a in (REFUSAL, comply.format(**fill))]  # fmt: skip
    return lines


def byte_level_bpe(corpus: Sequence[str], special: Sequence[str], vocab_size: int):
    """A byte-level BPE `tokenizers.Tokenizer` trained on `corpus`, `special` kept whole."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return tok


def train_tokenizer(vocab_size: int = 512):
    """A byte-level BPE trained on the QA corpus, wrapped as a transformers fast tokenizer.

    Byte-level, so any text round-trips (no unknown token); BOS is prepended by the tokenizer's
    post-processor like Llama's; `<image>` is a special token so it is never split or merged."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = byte_level_bpe(qa_corpus(), SPECIAL_TOKENS, vocab_size)
    bos = SPECIAL_TOKENS.index("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        chat_template=CHAT_TEMPLATE,
        padding_side="left",  # batched generation appends to the right end of every row
        model_max_length=512,
    )
