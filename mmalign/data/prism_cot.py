"""The PRISM-CoT format (Li et al. 2025, section 3.1) as text: four tagged stages, in order,

    <|PROBLEM|>...<|/PROBLEM|>      the intent of the request
    <|CAPTION|>...<|/CAPTION|>      the image, as the request needs it
    <|REASONING|>...<|/REASONING|>  the two combined: is anything a violation?
    <|OUTPUT|>...<|/OUTPUT|>        the answer, or a refusal naming the violation

`format_cot` writes a chain of thought, `parse_stages` splits a generation into its stages and
says whether it complies with the format. The toy world writes its answers with these, and
`mmalign.vlm.prism.format` makes the tags special tokens of a model's tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

STAGES: tuple[str, ...] = ("PROBLEM", "CAPTION", "REASONING", "OUTPUT")


def open_tag(stage: str) -> str:
    return f"<|{stage}|>"


def close_tag(stage: str) -> str:
    return f"<|/{stage}|>"


TAGS: tuple[str, ...] = tuple(t for s in STAGES for t in (open_tag(s), close_tag(s)))
TAG_PATTERN = re.compile(r"<\|(/?)(" + "|".join(STAGES) + r")\|>")


def format_cot(stages: dict[str, str]) -> str:
    """The tagged text of `stages` (stage name -> content), in PRISM order; stages absent from
    the mapping are left out (a partial chain of thought)."""
    return "".join(f"{open_tag(s)}{stages[s]}{close_tag(s)}" for s in STAGES if s in stages)


@dataclass
class ParsedCoT:
    """A generation split into stages. `compliant`: the four stages, each opened and closed,
    in order, with nothing but whitespace between them; `problems` says what is wrong."""

    stages: dict[str, str]
    compliant: bool
    problems: list[str] = field(default_factory=list)
    last_stage: str | None = None  # the last stage that was closed
    unclosed: str | None = None  # the stage left open at the end (a generation cut short)

    @property
    def output(self) -> str | None:
        return self.stages.get("OUTPUT")


def parse_stages(text: str) -> ParsedCoT:
    """Split `text` at the stage tags. A stage's content is what lies between its opening and
    closing tag; an unclosed stage, a stage out of order, a repeated stage, a stray tag and text
    outside the stages are each named in `problems` (and make the text non-compliant)."""
    stages: dict[str, str] = {}
    problems: list[str] = []
    pos, expected, current, start = 0, 0, None, 0
    last = None
    for m in TAG_PATTERN.finditer(text):
        closing, stage = m.group(1) == "/", m.group(2)
        if current is None:
            if text[pos : m.start()].strip():
                problems.append(f"text outside the stages before {m.group(0)}")
            if closing:
                problems.append(f"{m.group(0)} closes a stage that was not opened")
                pos = m.end()
                continue
            if stage in stages:
                problems.append(f"{stage} appears twice")
            elif STAGES.index(stage) != expected:
                problems.append(f"{stage} out of order (expected {STAGES[expected]})"
                                if expected < len(STAGES) else f"{stage} after OUTPUT")  # fmt: skip
            current, start = stage, m.end()
        else:
            if not closing or stage != current:
                problems.append(f"{m.group(0)} inside {current}")
                continue
            if current not in stages:
                stages[current] = text[start : m.start()].strip()
            expected = max(expected, STAGES.index(current) + 1)
            last, current, pos = current, None, m.end()
    if current is not None:
        problems.append(f"{current} is never closed")
    elif text[pos:].strip():
        problems.append("text outside the stages at the end")
    missing = [s for s in STAGES if s not in stages]
    if missing:
        problems.append(f"missing stage(s) {', '.join(missing)}")
    return ParsedCoT(stages, not problems, problems, last, current)


def final_answer(text: str) -> str:
    """The OUTPUT stage's content when there is one, else the whole text (a model without the
    format answers directly): what attack success and benign accuracy are judged on. An OUTPUT
    stage opened but never closed (cut at the length limit) is the text after its opening tag:
    a refusal cut short there still opens with the refusal, not with the earlier stages. Stray
    tags are never part of the answer, closed stage or not (`<|OUTPUT|><|OUTPUT|>I cannot
    help...` refuses; `format_compliance` counts the broken format)."""
    parsed = parse_stages(text)
    if parsed.output is not None:
        answer = parsed.output
    else:
        head, opened, rest = text.partition(open_tag("OUTPUT"))
        answer = rest if opened else head
    return TAG_PATTERN.sub(" ", answer).strip()


def is_partial(answer: str) -> bool:
    """Whether an assistant text stops after a stage other than OUTPUT (a step-level prefix
    from the search): its turn is not over, so no end-of-turn token follows it."""
    found = list(TAG_PATTERN.finditer(answer))
    if not found or not answer.rstrip().endswith(found[-1].group(0)):
        return False
    return found[-1].group(1) == "/" and found[-1].group(2) != "OUTPUT"


def is_unclosed(answer: str) -> bool:
    """Whether an assistant text stops inside a stage: its last opened stage is never closed
    (a search node cut at the length limit, `Node.failed == "unclosed"`). Stray tags of other
    stages inside it do not close it, as in `parse_stages`."""
    return parse_stages(answer).unclosed is not None


def open_ended(answer: str) -> bool:
    """Whether training scores `answer` without the end-of-turn token: a step-level prefix
    (`is_partial`: the turn goes on) or a stage cut short (`is_unclosed`: the model never ended
    it; an end-of-turn token would make a rejected answer one it never produced)."""
    return is_partial(answer) or is_unclosed(answer)
