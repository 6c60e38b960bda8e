"""Re-Align's fill-in: the masked spans of an answer re-generated, left to right, by the VLM
shown another (retrieved) image, given the question and the answer's text before each span."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.schema import to_pil_image, to_rgb
from .collate import ChatFormat, special_tokens_kwargs
from .load import VLM
from .realign_lexicon import Span


class SpanFiller:
    """Re-generate masked spans of answers with the VLM shown another image (greedy,
    batched with left padding, a progress bar per pass)."""

    def __init__(self, vlm: VLM, batch_size: int = 32, max_new_tokens: int = 8):
        self.vlm, self.batch_size, self.max_new_tokens = vlm, batch_size, max_new_tokens
        self.chat = ChatFormat(vlm.processor)

    def _head(self, prompt: str, answer: str, cut: int) -> str:
        """The text the model continues: the chat prompt, then `answer[:cut]` as the start
        of the assistant turn (trailing spaces dropped: a word's token carries its space)."""
        rendered = self.chat.render(prompt, 1, [answer])
        completion = rendered.completions[answer]
        at = completion.find(answer)
        if at < 0:
            raise ValueError(f"the chat template does not keep the answer {answer!r} verbatim")
        return rendered.prompt + (completion[:at] + answer[:cut]).rstrip(" ")

    @torch.no_grad()
    def _generate(self, texts: Sequence[str], images: Sequence[Any], desc: str) -> list[str]:
        model, processor = self.vlm.model, self.vlm.processor
        tok = self.vlm.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        device = next(model.parameters()).device
        out: list[str] = []
        try:
            for start in tqdm(range(0, len(texts), self.batch_size), desc=desc, unit="batch",
                              leave=False):  # fmt: skip
                chunk = list(texts[start : start + self.batch_size])
                pil = [to_rgb(to_pil_image(im)) for im in images[start : start + len(chunk)]]
                inputs = processor(
                    text=chunk,
                    images=pil,
                    padding=True,
                    return_tensors="pt",
                    **special_tokens_kwargs(processor, chunk),
                )
                inputs = inputs.to(device)
                ids = model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                     do_sample=False)  # fmt: skip
                new = ids[:, inputs["input_ids"].shape[1] :]
                out += processor.batch_decode(new, skip_special_tokens=True)
        finally:
            tok.padding_side = side
        return out

    def fill(self, prompts: Sequence[str], images: Sequence[Any], answers: Sequence[str],
             spans: Sequence[Sequence[Span]]) -> list[str]:  # fmt: skip
        """Each answer with its spans re-generated under the matching image."""
        current, shift = list(answers), [0] * len(answers)
        for j in range(max((len(s) for s in spans), default=0)):
            rows = [i for i, s in enumerate(spans) if len(s) > j]
            texts = [self._head(prompts[i], current[i], spans[i][j].start + shift[i])
                     for i in rows]  # fmt: skip
            generated = self._generate(texts, [images[i] for i in rows],
                                       desc=f"filling span {j + 1}")  # fmt: skip
            for i, text in zip(rows, generated, strict=True):
                span = spans[i][j]
                start, end = span.start + shift[i], span.end + shift[i]
                original = current[i][start:end]
                words = text.split()[: len(original.split())]
                if not words:  # nothing generated: the span stays, the filter will drop it
                    continue
                if original[-1].isalnum():  # "blue." -> "blue" where the span had no stop
                    words[-1] = words[-1].rstrip(".,;:!?") or words[-1]
                new = " ".join(words)
                current[i] = current[i][:start] + new + current[i][end:]
                shift[i] += len(new) - len(original)
        return current
