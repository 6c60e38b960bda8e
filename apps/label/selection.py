"""Which votes an export holds, and with which answer (`mmalign label export`).

One row per vote that is not undone, with the answer to one question (`--criterion NAME`,
default the criteria file's `label`); left out and counted by reason, in this order:
`skip` (skipped pairs), `gold` (votes on gold pairs: they measure annotators, they are not
data), `flagged` (votes of annotators flagged by `quality.py`, with `--exclude-flagged`),
`both_bad` (the chosen question answered "both bad": no preference to learn from) and
`no_answer` (a vote with no answer to that question).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import select

from .criteria import stored_criteria
from .gold import gold_answers
from .quality import quality_settings, team_quality
from .store import Store
from .tables import answers


def _answers_to(store: Store, criterion: str) -> dict[str, str]:
    with store.read.begin() as conn:
        rows = conn.execute(
            select(answers.c.vote_id, answers.c.choice).where(answers.c.criterion == criterion)
        )
        return {r.vote_id: r.choice for r in rows}


def select_votes(
    store: Store, *, criterion: str | None = None, exclude_flagged: bool = False,
    thresholds: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], Counter[str], dict[str, Any]]:  # fmt: skip
    """(votes to export, their `choice` the chosen question's answer; skipped by reason;
    what the summary adds: the criterion and the excluded annotators when they apply)."""
    criteria = stored_criteria(store)
    name = criteria.pick(criterion)  # CriteriaError with did-you-mean for a wrong name
    by_answer = None if name == criteria.first else _answers_to(store, name)
    gold = set(gold_answers(store))
    info: dict[str, Any] = {}
    if criterion is not None or len(criteria.items) > 1:
        info["criterion"] = name
    flagged: set[str] = set()
    if exclude_flagged:
        quality = team_quality(store, **quality_settings(store, **(thresholds or {})))
        flagged = set(quality["flagged"])
        info["excluded_annotators"] = sorted(flagged)
    kept, skipped = [], Counter[str]()
    for v in store.all_votes():
        if v["choice"] == "skip":
            skipped["skip"] += 1
        elif v["pair_id"] in gold:
            skipped["gold"] += 1
        elif v["annotator"] in flagged:
            skipped["flagged"] += 1
        else:
            choice = v["choice"] if by_answer is None else by_answer.get(v["vote_id"])
            if choice is None:
                skipped["no_answer"] += 1
            elif choice == "both_bad":
                skipped["both_bad"] += 1
            else:
                kept.append({**v, "choice": choice})
    return kept, skipped, info
