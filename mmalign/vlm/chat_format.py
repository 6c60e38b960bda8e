"""A row's conversation rendered by the processor's chat template, and the rows it refuses.

`ChatFormat.render` gives the prompt text (the user turn and the generation prompt) and, per
answer, the text the template appends for the assistant turn. The answer's place in that text
is found by rendering the turn once with a sentinel answer: the text before and after the
sentinel is the template's own (Qwen's `<|im_end|>\\n`, Idefics3's `<end_of_utterance>\\n`,
LLaVA's `</s>`), so an answer such as "d", "of" or "s" that also occurs inside that text is
never matched there. The completion's tokens are then exactly those that transformers'
`apply_chat_template(tokenize=True)` of the whole conversation adds after the prompt
(`ChatFormat.closed` adds the EOS only where the template ends the turn with none). A template
that opens the assistant turn other than with its generation prompt (LLaVA-OneVision's writes
"assistant \\n" where its generation prompt is "assistant\\n") has the answer and what follows
it scored after the generation prompt, as the model generates it (`ChatFormat._opening`).

A prompt is the user's raw text: one that already carries the template's own framing (TRL's
"standard" string prompts are used as they are, so such data often holds them: LLaVA's
"USER: <image>\\n... ASSISTANT:", Qwen's "<|im_start|>user\\n...") would be templated twice, so
`ChatFormat.check_prompt` refuses it (`RowError` "pretemplated_prompt").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..data.schema import IMAGE_PLACEHOLDER, ValidationReport

# an answer no template writes itself: its place in the rendered turn is the answer's place
SENTINEL = "MMALIGN_ANSWER_SENTINEL_5f1c9e"
# a user text no template writes itself: the template's text around it frames every prompt
PROMPT_SENTINEL = "MMALIGN_PROMPT_SENTINEL_8d2a47"


class RowError(ValueError):
    """A row that cannot be collated. `reason` is its skip-count key in a `ValidationReport`
    (`missing_retrieved_image`, `image_placeholder_mismatch`, ...); `row` the row it names."""

    def __init__(self, reason: str, detail: str, row: int | None = None):
        super().__init__(detail if row is None else f"row {row}: {detail}")
        self.reason, self.detail, self.row = reason, detail, row

    def __reduce__(self) -> tuple[Any, ...]:
        # a DataLoader worker pickles the error to the main process: rebuild it from its parts
        return (RowError, (self.reason, self.detail, self.row))

    def at(self, row: int | None) -> RowError:
        """The same error naming `row`."""
        return RowError(self.reason, self.detail, row)


def user_content(prompt: str, n_images: int) -> list[dict[str, str]]:
    """Chat content parts: the prompt split at `<image>` placeholders, images interleaved."""
    parts = prompt.split(IMAGE_PLACEHOLDER)
    if len(parts) == 1:
        return [{"type": "image"}] * n_images + [{"type": "text", "text": prompt}]
    if len(parts) - 1 != n_images:
        raise RowError(
            "image_placeholder_mismatch",
            f"the prompt has {len(parts) - 1} {IMAGE_PLACEHOLDER} placeholders but the row has "
            f"{n_images} images",
        )
    content: list[dict[str, str]] = []
    for i, text in enumerate(parts):
        if i:
            content.append({"type": "image"})
        if text.strip():
            content.append({"type": "text", "text": text.strip()})
    return content


def special_tokens_kwargs(processor: Any, texts: Sequence[str]) -> dict[str, Any]:
    """Processor kwargs for chat-template texts: `add_special_tokens=False` when the template
    already wrote the tokenizer's BOS (Idefics3's starts with `<|begin_of_text|>`), so the
    sequence holds one BOS, not two; transformers' `processor.apply_chat_template(tokenize=True)`
    follows the same rule. Texts without the BOS keep the processor's default (LLaVA-1.5's
    template leaves the BOS to the tokenizer)."""
    bos = getattr(getattr(processor, "tokenizer", processor), "bos_token", None)
    if bos and texts and all(t.startswith(bos) for t in texts):
        return {"add_special_tokens": False}
    return {}


@dataclass
class Templated:
    """A row's conversation rendered by the chat template: prompt text and completions."""

    prompt: str
    completions: dict[str, str]  # answer -> the text the template appends for it


def _turn(answer: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": answer}]}


class ChatFormat:
    """Render prompts and completions with a processor's chat template. `open_end(answer)`:
    the answers whose turn is not over (a step-level prefix), which end without the template's
    end-of-turn text."""

    def __init__(self, processor: Any, open_end: Callable[[str], bool] | None = None):
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.open_end = open_end
        # an answer `open_end` names that cannot end open (the template changes it) is closed
        # instead of refused: `fitting.OpenBound`'s lower bound, where that one stays closed
        self.open_where_possible = False
        self._user_frame: tuple[str, str] | None = None
        self._own_specials: list[str] = []
        self._framed = False  # the template's own text, rendered once on first use

    def _learn_frame(self) -> None:
        if self._framed:
            return
        user = [{"role": "user", "content": user_content(PROMPT_SENTINEL, 0)}]
        head = self.processor.apply_chat_template(user, add_generation_prompt=True)
        if isinstance(head, str) and head.count(PROMPT_SENTINEL) == 1:
            before, _, after = head.partition(PROMPT_SENTINEL)
            bos = getattr(self.tokenizer, "bos_token", None)
            if bos and before.startswith(bos):  # Idefics3's <|begin_of_text|>
                before = before[len(bos) :]
            self._user_frame = before.strip(), after.strip()
        # the special tokens the template writes (around a turn, an image, an answer) and
        # BOS / EOS; not those it never writes, such as Qwen's <|box_start|>, which a user's
        # grounding question may hold
        shown = [{"role": "user", "content": user_content(PROMPT_SENTINEL, 1)}]
        text = self.processor.apply_chat_template(shown, add_generation_prompt=True)
        text += self.processor.apply_chat_template([*shown, _turn(SENTINEL)])
        tok = self.tokenizer
        ends = [getattr(tok, "bos_token", None), getattr(tok, "eos_token", None)]
        # markup only: a special token that is a plain word or one character is no evidence
        # of a template (a pad_token set to "!"); `<image>` is mmalign's own placeholder
        self._own_specials = [
            t for t in dict.fromkeys(getattr(tok, "all_special_tokens", []))
            if t and len(t) > 2 and not t.isalnum() and t != IMAGE_PLACEHOLDER
            and (t in text or t in ends)
        ]  # fmt: skip
        self._framed = True

    def user_frame(self) -> tuple[str, str] | None:
        """The template's text before the user's words and after them up to the end of the
        generation prompt ("USER: ", " ASSISTANT:" for LLaVA-1.5; "<|im_start|>user\\n",
        "<|im_end|>\\n<|im_start|>assistant\\n" for Qwen2-VL), each stripped and without a
        leading BOS; None where the template does not render `PROMPT_SENTINEL` once."""
        self._learn_frame()
        return self._user_frame

    def _ends(self) -> dict[str, str]:
        """The BOS and EOS among the template's special tokens, each with what it is."""
        tok = self.tokenizer
        roles = {"BOS": getattr(tok, "bos_token", None), "EOS": getattr(tok, "eos_token", None)}
        ends: dict[str, str] = {}
        for role, token in roles.items():
            if token in self._own_specials:
                ends[token] = f"{ends[token]} and {role}" if token in ends else role
        return ends

    def check_prompt(self, prompt: str) -> None:
        """Refuse a prompt that already carries the chat template's own framing (it would be
        templated twice: 'USER: USER: <image>\\n... ASSISTANT: ASSISTANT:'): one that starts
        with the template's text before the user's words or ends with its generation prompt
        (as rendered with `PROMPT_SENTINEL`; LLaVA's 'USER:' and 'ASSISTANT:', matched case
        and all, so 'assistant:' inside a question passes), or that holds a special token the
        template writes (`<|im_start|>`, Qwen's `<|vision_start|><|image_pad|>`):
        "pretemplated_prompt". `<image>` is the user's placeholder.

        A prompt that holds the tokenizer's BOS or EOS as text and nothing of the template
        (an HTML question, "what does <s> do?") is refused as "special_token_in_prompt": the
        tokenizer reads that text as the special token, not as its characters (transformers
        splits special tokens out of any text it encodes), so the model would see a sequence
        start or end mid-prompt, and the message says so."""
        text = prompt.strip()
        framing: list[str] = []
        frame = self.user_frame()
        bos = getattr(self.tokenizer, "bos_token", None)
        body = text[len(bos) :].lstrip() if bos and text.startswith(bos) else text
        if frame is not None and frame[0] and body.startswith(frame[0]):
            framing.append(f"it starts with the template's user-turn text {frame[0]!r}")
        if frame is not None and frame[1] and text.endswith(frame[1]):
            framing.append(f"it ends with the template's generation prompt {frame[1]!r}")
        ends = self._ends()
        held = [t for t in self._own_specials if t in text and t not in ends]
        if held:
            framing.append(f"it holds the template's special token(s) {', '.join(held)}")
        tokens = [t for t in ends if t in text]
        read = "; ".join(f"{t} as its {ends[t]} token" for t in tokens)
        if framing:
            if tokens:
                framing.append(f"it holds the tokenizer's special token(s) {', '.join(tokens)}")
            raise RowError(
                "pretemplated_prompt",
                f"the prompt is already in the chat template's format ({'; '.join(framing)}): "
                "give the raw user text; mmalign applies the model's chat template itself, and "
                f"{IMAGE_PLACEHOLDER} marks where the images go",
            )
        if tokens:
            raise RowError(
                "special_token_in_prompt",
                f"the prompt holds the tokenizer's special token(s) {', '.join(tokens)} as "
                f"text: the tokenizer would read {read}, not as those characters, so the model "
                "would see the sequence start or end mid-prompt; write it another way (in "
                "words, or spaced out)",
            )

    def render(self, prompt: str, n_images: int, answers: Sequence[str]) -> Templated:
        self.check_prompt(prompt)
        user = [{"role": "user", "content": user_content(prompt, n_images)}]
        head = self.processor.apply_chat_template(user, add_generation_prompt=True)
        sentinel = self.processor.apply_chat_template([*user, _turn(SENTINEL)])
        opening = self._opening(user, head, sentinel)
        frame = self._frame(sentinel, head, opening)
        completions = {}
        for answer in answers:
            full = self.processor.apply_chat_template([*user, _turn(answer)])
            completion = self._completion(full, head, opening)
            if completion is None:
                raise RowError(
                    "template_changes_prompt",
                    "the chat template renders the assistant turn in a way that changes the "
                    f"prompt before it; cannot separate the completion of {answer!r}",
                )
            end = self.answer_end(completion, answer, frame)
            opens = self.open_end is not None and self.open_end(answer)
            if opens and end is None and self.open_where_possible:
                opens = False  # it cannot end open: measured closed, as it will be
            if opens:
                if end is None:
                    raise RowError(
                        "template_changes_answer",
                        f"the chat template changed the open-ended answer {answer!r}",
                    )
                completions[answer] = completion[:end]
            else:
                completions[answer] = self.closed(completion, answer, end)
        return Templated(head, completions)

    def _opening(self, user: list[dict[str, Any]], head: str, sentinel: str) -> str | None:
        """The conversation's text up to the answer where the template opens the assistant
        turn other than with its generation prompt (LLaVA-OneVision's hub template writes
        "<|im_start|>assistant \\n" before the answer, its generation prompt
        "<|im_start|>assistant\\n"), the user turn rendered alike in both; None where the
        turn follows the generation prompt (or the user turn changes too). `sentinel`: the
        conversation rendered with `SENTINEL` as the answer."""
        if sentinel.startswith(head) or sentinel.count(SENTINEL) != 1:
            return None
        base = self.processor.apply_chat_template(user)  # the user turn alone
        opening = sentinel.partition(SENTINEL)[0]
        return opening if head.startswith(base) and opening.startswith(base) else None

    @staticmethod
    def _completion(full: str, head: str, opening: str | None) -> str | None:
        """What the template appends after the prompt `head` for the turn rendered in `full`:
        where the turn opens other than the generation prompt (`opening`), the answer and what
        follows it, after the generation prompt, as the model generates it; None where `full`
        does not continue the prompt."""
        if full.startswith(head):
            return full[len(head) :]
        return full[len(opening) :] if opening is not None and full.startswith(opening) else None

    def _frame(self, sentinel: str, head: str, opening: str | None) -> tuple[str, str] | None:
        """The template's text before and after the answer in the assistant turn (`sentinel`:
        the turn rendered with `SENTINEL` as its answer), or None where it cannot be told
        apart."""
        completion = self._completion(sentinel, head, opening)
        if completion is None or completion.count(SENTINEL) != 1:
            return None
        before, _, after = completion.partition(SENTINEL)
        return before, after

    @staticmethod
    def answer_end(completion: str, answer: str, frame: tuple[str, str] | None) -> int | None:
        """Where the answer's text (whitespace stripped) ends in `completion`, or None where
        the template does not render it there. The answer sits between the template's own
        text (`frame`); a template whose text around the answer depends on the answer falls
        back to the answer's first occurrence: the prompt being a prefix of the rendered
        conversation, the completion starts with the answer."""
        text = answer.strip()
        if not text:
            return len(completion) if frame is None else len(completion) - len(frame[1])
        if frame is not None:
            before, after = frame
            stop = len(completion) - len(after)
            if completion.startswith(before) and completion.endswith(after) \
                    and stop >= len(before):  # fmt: skip
                middle = completion[len(before) : stop]
                if middle.strip() == text:
                    return len(before) + len(middle.rstrip())
        start = completion.find(text)
        return None if start < 0 else start + len(text)

    def closed(self, completion: str, answer: str, end: int | None = None) -> str:
        """`completion` ending its turn: where the template appends no end-of-turn token after
        the answer (LLaVA-1.5's and LLaVA-NeXT-vicuna's hub templates append a space), the
        tokenizer's EOS replaces that trailing whitespace, as LLaVA's own training format
        ends an assistant turn ("ASSISTANT: answer</s>", its vicuna_v1 conversation). Without
        it the model is never trained to stop, and a stray space token is scored instead.
        A template that ends the turn with any special token (Qwen's <|im_end|>, Idefics3's
        <end_of_utterance>, an EOS) is left as it is. `end`: where the answer ends in
        `completion` (`answer_end`; found there when not given)."""
        eos = getattr(self.tokenizer, "eos_token", None)
        if end is None and answer.strip():
            end = self.answer_end(completion, answer, None)
        if not eos or end is None or not answer.strip():
            return completion
        tail = completion[end:]
        specials = [t for t in getattr(self.tokenizer, "all_special_tokens", []) if t]
        if any(t in tail for t in specials):
            return completion
        return completion[:end] + tail.rstrip() + eos

    def completion_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class PromptScreen:
    """Rows to generate answers for, by their prompts (`ChatFormat.check_prompt`): `kept` the
    indices of those accepted; the refused ones counted by reason in `report`, with the first
    refusal's words for each reason in `details`."""

    kept: list[int]
    report: ValidationReport
    details: dict[str, str]

    @property
    def refused(self) -> int:
        return self.report.num_skipped

    def record(self) -> dict[str, Any]:
        """The refused rows for a results or summary JSON: count, reasons, example rows."""
        return {"refused": self.refused, "reasons": dict(self.report.skipped),
                "rows": {k: list(v) for k, v in self.report.examples.items()},
                "details": dict(self.details)}  # fmt: skip

    def __str__(self) -> str:
        said = [f"  {reason}, e.g.: {detail}" for reason, detail in self.details.items()]
        return "\n".join([str(self.report), *said])


def screen_prompts(processor: Any, prompts: Sequence[str], name: str = "prompts",
                   source_row: Callable[[int], int] | None = None) -> PromptScreen:  # fmt: skip
    """Check every prompt as training does (`ChatFormat.check_prompt`): generation on a prompt
    already in the template's format would template it twice. The refused rows are counted,
    for the caller to report and leave out; none is dropped without a word. `source_row`:
    the row of the data as read that prompt `i` is (`ValidationReport.source_row` of the
    opened data), as the report names them; `kept` holds positions in `prompts`."""
    chat = ChatFormat(processor)
    report = ValidationReport(name)
    kept: list[int] = []
    details: dict[str, str] = {}
    for i, prompt in enumerate(prompts):
        try:
            chat.check_prompt(prompt)
        except RowError as err:
            report.skip(i if source_row is None else source_row(i), err.reason)
            details.setdefault(err.reason, err.detail)
            continue
        report.keep()
        kept.append(i)
    return PromptScreen(kept, report, details)


def screen_rows(processor: Any, rows: Any, name: str = "prompts") -> tuple[Any, PromptScreen]:
    """`rows` (a `datasets.Dataset` or a list of row dicts) without those whose prompt
    `screen_prompts` refuses, and the screen that says which and why."""
    prompts = rows["prompt"] if hasattr(rows, "column_names") else [r["prompt"] for r in rows]
    screen = screen_prompts(processor, prompts, name)
    if screen.refused:
        kept = screen.kept
        rows = rows.select(kept) if hasattr(rows, "select") else [rows[i] for i in kept]
    return rows, screen
