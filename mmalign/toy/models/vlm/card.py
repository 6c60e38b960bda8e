"""toy-vlm's model card (README.md), written from the build's metrics and settings."""

from __future__ import annotations

from typing import Any

from ...qa import FORBIDDEN, IMAGE_SIZE, QUESTION_TYPES, REFUSAL


def model_card(m: dict[str, Any], command: str) -> str:
    s, a = m["settings"], m["settings"]["arch"]
    grid = IMAGE_SIZE // a["patch_size"]
    layers = ", ".join(str(x) for x in a["feature_layers"])
    weights = s["group_weights"]
    share = sum(w for g, w in zip(s["groups"], weights, strict=True)
                if [list(b) for b in g] == [[FORBIDDEN]])  # fmt: skip
    share /= sum(weights)
    rows = "\n".join(f"| {k} | {100 * m[f'accuracy_{k}']:.1f}% |" for k in QUESTION_TYPES)
    return f"""---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [llava, toy, mmalign]
---

# toy-vlm

A tiny LLaVA-architecture vision-language model that answers questions about the mmalign toy
"shapes" world (a coloured shape on a coloured background, 32x32). It exists so that every VLM
code path of mmalign (loading, LoRA, pair scoring, preference training, evaluation) runs for
real on a CPU in minutes. It is not a general VLM.

```python
from transformers import AutoProcessor, LlavaForConditionalGeneration
model = LlavaForConditionalGeneration.from_pretrained(path)
processor = AutoProcessor.from_pretrained(path)
messages = [{{"role": "user", "content": [{{"type": "image"}},
             {{"type": "text", "text": "What color is the shape?"}}]}}]
text = processor.apply_chat_template(messages, add_generation_prompt=True)
inputs = processor(images=image, text=text, return_tensors="pt")
reply = model.generate(**inputs, max_new_tokens=4)
```

## Architecture ({m["parameters"]:,} parameters, fp32 safetensors)

- `LlavaForConditionalGeneration` (same classes as `llava-hf/llava-1.5-7b-hf`).
- Vision tower: CLIP ViT, image {IMAGE_SIZE}, patch {a["patch_size"]} ({grid}x{grid} patches +
  CLS), hidden {a["vision_hidden"]}, {a["vision_layers"]} layers, {a["vision_heads"]} heads;
  the projector reads hidden states {layers} concatenated (`vision_feature_layer`), CLS
  dropped (`vision_feature_select_strategy="default"`), so an image is {grid * grid} `<image>`
  tokens.
- Projector: Linear-GELU-Linear ({len(a["feature_layers"])} x {a["vision_hidden"]} ->
  {a["text_hidden"]}).
- Language model: Llama, hidden {a["text_hidden"]}, {a["text_layers"]} layers,
  {a["text_heads"]} heads, vocabulary {m["vocab_size"]}.
- Tokenizer: byte-level BPE trained on the toy QA text (`<s>`, `</s>`, `<pad>`, `<image>`
  special), LLaVA-1.5 chat format: `USER: <image>\\n{{question}} ASSISTANT: {{answer}}</s>`.
- Processor: `LlavaProcessor` with a `CLIPImageProcessor` (resize/crop to {IMAGE_SIZE}, OpenAI
  CLIP mean/std).

## Data

Fresh jittered renders (styles: {", ".join(s["styles"])}) of **train-split** prompts every
step; questions in four balanced types, four phrasings each, one-word answers:
shape colour ("What color is the shape?" -> `red`), shape kind (-> `circle`), background colour,
and presence ("Is there a blue square?" -> `yes`/`no`, 50/50; a "no" differs from the image in
colour or in shape). The held-out (shape, colour, background) combinations of
`mmalign.toy.world` are never trained on.

Safety turns (BPO's starting point): {100 * share:.0f}% of conversations are one forbidden request
about the image (four templates: using the shape to hurt someone or to break a window, a
"secret code", a "password"), answered with the refusal "{REFUSAL}" {100 * s["refusal_share"]:.0f}%
of the time and complied with otherwise. Like an instruction-tuned VLM, the model knows the
refusal, but greedy decoding rarely picks it.

## Training

Stage 1: the vision tower alone, {s["vision_steps"]} steps of batch {s["vision_batch"]} (lr
{s["vision_lr"]}), classifying the shape from its mean patch feature (a stand-in for LLaVA's
pretrained CLIP; the head is discarded). Stage 2: the projector and language model (tower frozen,
as in LLaVA), {s["steps"]} steps of batch {s["batch_size"]} conversations (one image, three or
four questions, or one forbidden request; presence, when asked, comes first so its answer
cannot be copied), loss on the answer tokens and EOS only; AdamW (lr {s["lr"]}, weight decay
{s["weight_decay"]}), {s["warmup"]} warmup steps then cosine to zero; gradient clipping
{s["grad_clip"]}; seed {s["seed"]}. Training took {m["train_seconds"]:.0f} s on a CPU
({m["total_seconds"]:.0f} s with the evaluation).

## Evaluation

Greedy exact match on {m["n"]} QA items (balanced over types) on renders of **held-out**
prompts (`evaluate_toy_vlm(path, n={m["n"]}, seed={m["seed"]})`):

| question type | accuracy |
|---|---|
{rows}
| **overall** | **{100 * m["accuracy"]:.1f}%** |

Greedy answers that are exactly the refusal, on {m["refusal_n"]} held-out renders
(`refusal_rates`): forbidden requests {100 * m["refusal_forbidden"]:.1f}%, ordinary questions
{100 * m["refusal_benign"]:.1f}%. The refusal's mean probability on those forbidden requests
(teacher-forced, whole answer with EOS): {100 * m["refusal_forbidden_prob"]:.1f}%.

## Reproduce

```
{command}
```
"""
