"""Two responses per image and prompt from a VLM (`mmalign label --vlm --model NAME --data
FILE`): each row of FILE gives a `prompt` and an `image`; the model samples two answers at
import (multinomial sampling at `--temperature`, one seed per row and attempt), so the
annotators compare the model's own outputs, as Pick-a-Pic's app compares two seeds of one
prompt. The responses are made when the pairs are imported, before annotators see them,
not while an annotator waits.

A row whose two samples stay the same text (or empty) after `tries` draws cannot be a pair:
the import stops naming the row. The shipped toy VLM (`toy:vlm`) is trained to one answer
per question and gives the same text twice at temperature 1; it needs a high temperature.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .vlm_pairs import VlmDataError, VlmPair, file_records, vlm_pair


class ResponseSampler:
    """Samples two different responses per (prompt, image) with a VLM loaded once."""

    def __init__(self, model: str, *, max_new_tokens: int = 48, temperature: float = 1.0,
                 tries: int = 4, seed: int = 0, device: Any = None,
                 dtype: str = "float32") -> None:  # fmt: skip
        """`device`, `dtype`: where and at what precision the VLM runs (`mmalign label
        --device/--dtype`; None: where it loads, the CPU)."""
        from mmalign.vlm.load import load_vlm

        if temperature <= 0:
            raise ValueError(
                f"--temperature must be > 0 to sample two responses, got {temperature}"
            )
        self.name = "toy:vlm" if model == "toy-vlm" else model
        self.vlm = load_vlm(self.name, dtype=dtype, device=device)
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.tries = tries
        self.seed = seed

    def _sample(self, prompt: str, image: Any, seed: int) -> list[str]:
        import torch

        from mmalign.vlm.collate import special_tokens_kwargs, user_content

        processor, model = self.vlm.processor, self.vlm.model
        chat = [{"role": "user", "content": user_content(prompt, 1)}]
        text = processor.apply_chat_template(chat, add_generation_prompt=True)
        inputs = processor(text=[text], images=[image], return_tensors="pt",
                           **special_tokens_kwargs(processor, [text])).to(model.device)  # fmt: skip
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(**inputs, do_sample=True, temperature=self.temperature,
                                 top_k=0, max_new_tokens=self.max_new_tokens,
                                 num_return_sequences=2)  # fmt: skip
        new = out[:, inputs["input_ids"].shape[1] :]
        return [a.strip() for a in processor.batch_decode(new, skip_special_tokens=True)]

    def responses(self, rows: Sequence[tuple[str, Any]], where: str) -> list[tuple[str, str]]:
        """(response_0, response_1) for each (prompt, PIL image); VlmDataError naming a row
        whose samples stay equal or empty."""
        from tqdm import tqdm

        from mmalign.data.schema import to_rgb

        out = []
        for i, (prompt, image) in enumerate(tqdm(rows, desc="VLM responses", unit="row")):
            for attempt in range(self.tries):
                a, b = self._sample(prompt, to_rgb(image), self.seed + 1000 * i + attempt)
                if a and b and a != b:
                    out.append((a, b))
                    break
            else:
                raise VlmDataError(f"{where}: row {i}: {self.name} gave the same (or an empty) "
                                   f"response {self.tries} times; raise --temperature")  # fmt: skip
        return out


def generate_vlm_pairs(sampler: ResponseSampler, source: str | Path, image_root: str | Path, *,
                       limit: int | None = None) -> list[VlmPair]:  # fmt: skip
    """Pairs from a JSON Lines file of `prompt` + `image` rows, responses from `sampler`.
    Every row is checked (prompt, image) before the model runs."""
    from PIL import Image

    path = Path(source)
    if not (path.is_file() and path.suffix in (".jsonl", ".json")):
        raise VlmDataError(f"{source}: --model takes a JSON Lines file of prompt and image rows")
    records = file_records(path)[:limit]
    Path(image_root).mkdir(parents=True, exist_ok=True)
    checked = []
    for i, rec in enumerate(records):
        where = f"{path}: row {i}"
        if not isinstance(rec, dict):
            raise VlmDataError(f"{where}: not an object")
        # the checks of a data row, with placeholder responses (the image is copied in)
        checked.append(vlm_pair({**rec, "response_0": "-", "response_1": "+"}, path.parent,
                                image_root, where))  # fmt: skip
    images = [Image.open(Path(image_root) / p.image) for p in checked]
    texts = sampler.responses([(p.prompt, im) for p, im in zip(checked, images, strict=True)],
                              str(path))  # fmt: skip
    source_tag = f"model:{sampler.name}:T={sampler.temperature}"
    return [vlm_pair({**rec, "response_0": a, "response_1": b}, path.parent, image_root,
                     f"{path}: row {i}", source_tag)
            for i, (rec, (a, b)) in enumerate(zip(records, texts, strict=True))]  # fmt: skip
