"""The questions a labeling run asks per pair, from a small YAML file (`--criteria FILE`).

Diffusion-DPO (Wallace et al. 2023, Sec. 5) asked its raters three questions per pair:
overall preference, visual appeal and prompt alignment. A criteria file lists them in the
order the annotator answers them:

    criteria:
      - {name: overall, question: "Which image do you prefer overall?"}
      - {name: appeal, question: "Which image is more visually appealing?"}
      - {name: alignment, question: "Which image matches the prompt better?"}
    label: overall        # the question that becomes the exported label (default: the first)

Every answer is `left`, `right`, `tie` or `both_bad` (Pick-a-Pic's "neither"); a skip skips
the whole pair. The first question's answer is also the vote's `choice` (what the queue,
the overlap and gold accuracy use); all answers are stored in the `answers` table.
The run's criteria are kept in the database (`settings`), so the export knows them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmalign.suggest import did_you_mean

ANSWERS = ("left", "right", "tie", "both_bad")  # what one question can be answered with
FILE_KEYS = ("criteria", "label")
CRITERION_KEYS = ("name", "question")
# fullmatched: with `match`, `$` also matches before a final newline ("overall\n" passed)
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_CRITERIA = 8
SETTING = "criteria"


class CriteriaError(ValueError):
    """A criteria file or an answer set that does not fit the run's questions."""


@dataclass(frozen=True)
class Criterion:
    name: str
    question: str


@dataclass(frozen=True)
class Criteria:
    """The questions, in the order asked; `label` names the one exported by default."""

    items: tuple[Criterion, ...]
    label: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.items)

    @property
    def first(self) -> str:
        return self.items[0].name

    def question(self, step: int) -> str:
        return self.items[step].question

    def pick(self, name: str | None) -> str:
        """The criterion `name` (default: `label`); CriteriaError with did-you-mean."""
        if name is None:
            return self.label
        if name not in self.names:
            raise CriteriaError(f"unknown criterion {name!r}; {did_you_mean(name, self.names)}")
        return name

    def check_answers(self, choice: str, answers: Mapping[str, str] | None) -> dict[str, str]:
        """The full answer set of a vote whose first answer is `choice`: {} for a skip, a
        one-question run may leave `answers` out; otherwise every question, answered with one
        of ANSWERS, the first equal to `choice`."""
        if choice == "skip":
            if answers:
                raise CriteriaError("a skipped pair has no answers")
            return {}
        if not answers:
            if len(self.items) > 1:
                raise CriteriaError(f"this run asks {len(self.items)} questions {self.names}; "
                                    "send answers for each")  # fmt: skip
            return {self.first: choice}
        if not isinstance(answers, Mapping):
            raise CriteriaError(
                f"answers must be a mapping of criterion -> answer, got {answers!r}"
            )
        for name, answer in answers.items():
            if name not in self.names:
                raise CriteriaError(f"unknown criterion {name!r}; {did_you_mean(name, self.names)}")
            if answer not in ANSWERS:
                raise CriteriaError(f"answer to {name!r} must be one of {ANSWERS}, got {answer!r}")
        missing = [n for n in self.names if n not in answers]
        if missing:
            raise CriteriaError(f"no answer to {missing}")
        if answers[self.first] != choice:
            raise CriteriaError(f"choice {choice!r} differs from the answer to {self.first!r} "
                                f"({answers[self.first]!r})")  # fmt: skip
        return {n: str(answers[n]) for n in self.names}

    def to_json(self) -> str:
        return json.dumps({"criteria": [c.__dict__ for c in self.items], "label": self.label})


DEFAULT = Criteria((Criterion("overall", "Which is better?"),), "overall")


def parse_criteria(raw: Any, where: str = "criteria") -> Criteria:
    """Criteria from parsed YAML/JSON; CriteriaError naming the key (with did-you-mean)."""
    if not isinstance(raw, Mapping):
        raise CriteriaError(f"{where}: a mapping with keys {FILE_KEYS}, got {type(raw).__name__}")
    for key in raw:
        if key not in FILE_KEYS:
            raise CriteriaError(
                f"{where}: unknown key {key!r}; {did_you_mean(str(key), FILE_KEYS)}"
            )
    items = raw.get("criteria")
    if not isinstance(items, list) or not items:
        raise CriteriaError(f"{where}: 'criteria' must be a non-empty list of {{name, question}}")
    if len(items) > MAX_CRITERIA:
        raise CriteriaError(f"{where}: {len(items)} criteria; at most {MAX_CRITERIA}")
    parsed: list[Criterion] = []
    for i, item in enumerate(items):
        at = f"{where}: criteria[{i}]"
        if not isinstance(item, Mapping):
            raise CriteriaError(f"{at}: a mapping with keys {CRITERION_KEYS}")
        for key in item:
            if key not in CRITERION_KEYS:
                raise CriteriaError(
                    f"{at}: unknown key {key!r}; {did_you_mean(str(key), CRITERION_KEYS)}"
                )
        name, question = item.get("name"), item.get("question")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise CriteriaError(f"{at}: name must match [a-z][a-z0-9_]* (<= 64), got {name!r}")
        if not isinstance(question, str) or not question.strip():
            raise CriteriaError(f"{at} ({name}): 'question' must be a non-empty string")
        if name in (c.name for c in parsed):
            raise CriteriaError(f"{at}: criterion {name!r} appears twice")
        parsed.append(Criterion(name, question.strip()))
    names = [c.name for c in parsed]
    label = raw.get("label", names[0])
    if label not in names:
        raise CriteriaError(f"{where}: label {label!r} is not a criterion; "
                            f"{did_you_mean(str(label), names)}")  # fmt: skip
    return Criteria(tuple(parsed), str(label))


def load_criteria(path: str | Path) -> Criteria:
    """Read a criteria YAML file (see the module docstring)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CriteriaError(f"{path}: not valid YAML ({err})") from None
    return parse_criteria(raw, str(path))


def save_criteria(store: Any, criteria: Criteria) -> None:
    """Keep the run's criteria in the database. Changing the questions of a run that has
    multi-question votes would orphan their answers, so that is refused; so is a new first
    question for one-question votes (their `choice`, read as the first question's answer,
    answered the old one)."""
    from sqlalchemy import func, select

    from .tables import answers, votes

    old = stored_criteria(store)
    with store.read.begin() as conn:
        answered = conn.execute(select(func.count()).select_from(answers)).scalar_one()
        voted = conn.execute(
            select(func.count()).where(votes.c.undone == 0, votes.c.choice != "skip")
        ).scalar_one()
    if old != criteria and (answered or (voted and old.first != criteria.first)):
        raise CriteriaError(f"this database already has votes on criteria {old.names}; "
                            f"use a new database for {criteria.names}")  # fmt: skip
    store.set_setting(SETTING, criteria.to_json())


def stored_criteria(store: Any) -> Criteria:
    """The run's criteria (DEFAULT, one question, when none were configured)."""
    text = store.get_setting(SETTING)
    return DEFAULT if text is None else parse_criteria(json.loads(text), "stored criteria")
