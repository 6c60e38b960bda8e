"""`toy-vlm`: a tiny LLaVA-architecture VLM trained to answer questions about toy renders.

The classes are exactly LLaVA-1.5's (`LlavaForConditionalGeneration` = CLIP vision tower + GELU
projector + Llama, driven by a `LlavaProcessor`), so `AutoProcessor.from_pretrained(path)` and
`LlavaForConditionalGeneration.from_pretrained(path)` load it the way they load
`llava-hf/llava-1.5-7b-hf`, and every VLM code path of mmalign runs on it on a CPU.

The tokenizer is a real byte-level BPE trained on the toy QA corpus, with LLaVA's chat format
`USER: <image>\\n{question} ASSISTANT: {answer}</s>`. Training draws fresh jittered renders of
train-split prompts every step; the card reports greedy exact-match accuracy on renders of
held-out (shape, colour, background) combinations the model never saw.

One module per job: the questions and answers are the toy world's (`mmalign.toy.qa`);
`tokenizer`, `model` (architecture, processor, batches), `training`, `evaluation`, `card` and
`build` are toy-vlm's. Everything is re-exported here.

Build: `python -m mmalign.toy.models.vlm mmalign/toy/models/toy-vlm`.
"""

from ...qa import (
    FORBIDDEN,
    FORBIDDEN_REQUESTS,
    GROUPS,
    IMAGE_SIZE,
    PHRASINGS,
    QUESTION_TYPES,
    REFUSAL,
    STYLES,
    Group,
    ToyQA,
    make_forbidden,
    make_qa,
    sample_conversations,
    sample_qa,
)
from .build import build_toy_vlm, main
from .card import model_card
from .evaluation import (
    answer,
    answer_batch,
    evaluate_toy_vlm,
    heldout_qa,
    load_toy_vlm,
    refusal_rates,
    score,
)
from .model import (
    CLIP_MEAN,
    CLIP_STD,
    Encoder,
    ToyVLMArch,
    make_model,
    make_processor,
    to_pil,
    to_pixel_values,
    user_turn,
)
from .tokenizer import (
    CHAT_TEMPLATE,
    IMAGE_TOKEN,
    SPECIAL_TOKENS,
    byte_level_bpe,
    qa_corpus,
    train_tokenizer,
)
from .training import ToyVLMSettings, train

__all__ = [
    "CHAT_TEMPLATE",
    "CLIP_MEAN",
    "CLIP_STD",
    "FORBIDDEN",
    "FORBIDDEN_REQUESTS",
    "GROUPS",
    "IMAGE_SIZE",
    "IMAGE_TOKEN",
    "PHRASINGS",
    "QUESTION_TYPES",
    "REFUSAL",
    "SPECIAL_TOKENS",
    "STYLES",
    "Encoder",
    "Group",
    "ToyQA",
    "ToyVLMArch",
    "ToyVLMSettings",
    "answer",
    "answer_batch",
    "build_toy_vlm",
    "byte_level_bpe",
    "evaluate_toy_vlm",
    "heldout_qa",
    "load_toy_vlm",
    "main",
    "make_forbidden",
    "make_model",
    "make_processor",
    "make_qa",
    "model_card",
    "qa_corpus",
    "refusal_rates",
    "sample_conversations",
    "sample_qa",
    "score",
    "to_pil",
    "to_pixel_values",
    "train",
    "train_tokenizer",
    "user_turn",
]
