"""`mmalign chat` read the model's processor twice (review 8): once to check `--prompt` before
the model loads (`VLMRef.processor`), once more inside `load_vlm`. `load_vlm` now takes the
processor already read (`processor=`), and `VLMRef.load` hands it over; the early refusal of a
prompt in the chat template's format stays (test_review7_prompt_checks)."""

from __future__ import annotations

from typing import Any

import pytest
from transformers import AutoProcessor

from mmalign.cli import main
from mmalign.vlm.load import VLMRef


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The folders `AutoProcessor.from_pretrained` read a processor from."""
    seen: list[str] = []
    real = AutoProcessor.from_pretrained.__func__

    def counted(cls: Any, name: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(name))
        return real(cls, name, *args, **kwargs)

    monkeypatch.setattr(AutoProcessor, "from_pretrained", classmethod(counted))
    return seen


def test_chat_reads_the_processor_once(reads, capsys):
    argv = ["chat", "toy:vlm", "--prompt", "What color is the shape?", "--max-new-tokens", "3",
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert len(reads) == 1  # was 2: the prompt check's, then load_vlm's own
    assert capsys.readouterr().out.strip()  # an answer is printed all the same


def test_a_ref_loads_with_the_processor_it_read(reads):
    ref = VLMRef("toy:vlm")
    processor = ref.processor
    vlm = ref.load()
    assert vlm.processor is processor and len(reads) == 1
    fresh = VLMRef("toy:vlm")  # nothing read before loading: read once, then kept
    assert fresh.load().processor is fresh.processor and len(reads) == 2
