"""The rows of opened VLM data that the collator can use, all checked before training (a bad
row never stops a run after its first steps): `PairCollator.skip_reason` (a column its pairs
need, the images, the prompt, then `vlm.max_length`). Each other row is counted in the data's
`ValidationReport` under its reason, or raises naming it under `vlm.strict`.

Rows are named as in the data as read (`ValidationReport.source_row`), as the data's own
validation names the rows it refused: the opened rows are renumbered once that validation
skips one, and a user looks for a row of their file. The checks can run in steps over the
rows the last one kept (BPO checks a row before its blind answer is generated, then with it),
and the counts are reported once for them all (`RowCheck.line`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from ..data.schema import ValidationReport
from .collate import PairCollator, RowError


class OpenBound(PairCollator):
    """A `PairCollator` for the first check of BPO rows, before their blind answers are
    generated: a row is too long only where it is too long with every answer scored open too
    (without the end-of-turn token). A data answer with the text of a blind answer cut by
    `vlm.blind_max_new_tokens` is scored open once those are known (`blind.open_or_capped`),
    and which ones are is not known yet: measured closed here, a row right at `max_length`
    would be skipped by its end-of-turn token, and get no blind answer, though the final check
    (with the blind answers, exact) keeps it."""

    def __init__(self, processor: Any, pairs: Sequence[str], max_length: int | None, *,
                 chosen_only: bool = False, open_end: Any = None):  # fmt: skip
        super().__init__(processor, pairs, max_length, chosen_only=chosen_only,
                         open_end=open_end)  # fmt: skip
        self.opened = PairCollator(processor, pairs, max_length, chosen_only=chosen_only,
                                   open_end=lambda answer: True)  # fmt: skip
        # an answer the template changes cannot end open, capped or not: closed, as the final
        # check measures it, while the others of its row are measured open
        self.opened.format.open_where_possible = True

    def fits(self, row: Any, index: int | None = None) -> bool:
        if super().fits(row, index):
            return True
        try:  # only a row too long as it stands is measured again, open
            return self.opened.fits(row, index)
        except RowError:  # a row the template cannot render at all: the final check skips it
            return False


class RowCheck:
    """The checks of the opened `rows` (a `datasets.Dataset`) and what they skipped: reason ->
    the skipped rows, named as in the data as read."""

    def __init__(self, rows: Any, report: ValidationReport, *, strict: bool = False):
        self.rows, self.report, self.strict = rows, report, strict
        self.skipped: dict[str, list[int]] = {}

    def usable(self, collator: PairCollator, extra: dict[str, list[Any]],
               ids: Sequence[int] | None = None) -> list[int]:  # fmt: skip
        """The ids of `ids` (default: every row) that `collator` can use, the row's `extra`
        columns added; the others are counted (or raise, under `strict`)."""
        ids = range(len(self.rows)) if ids is None else ids
        # nothing is tokenized without max_length: the rows are read as stored, no image decoded
        stored = self.rows.with_format("arrow") if collator.max_length is None else None
        keep: list[int] = []
        for i in tqdm(ids, desc="checking rows", unit="row", leave=False):
            row = dict(self.rows[i]) if stored is None else stored[i].to_pylist()[0]
            row.update({k: values[i] for k, values in extra.items()})
            reason = collator.skip_reason(row)
            if reason is None:
                keep.append(i)
                continue
            source = self.report.source_row(i)
            if self.strict:
                problem = collator.problem(row)
                if problem is not None:
                    raise problem.at(source)
                raise ValueError(
                    f"row {source}: {collator.lengths(row, source)} tokens exceed vlm.max_length "
                    f"{collator.max_length}; image tokens are never truncated"
                )
            self.skipped.setdefault(reason, []).append(source)
            # read and kept by the data's validation, skipped here: one row, counted once
            self.report.kept, self.report.total = self.report.kept - 1, self.report.total - 1
            self.report.skip(source, reason)
        return keep

    def line(self, max_length: int | None) -> str:
        """The skipped rows by reason, most first ("2 too_long (over vlm.max_length=64): rows
        3, 9; ..."): these checks' and those of the reading and validation before them (the
        data's report), so every row dropped is counted."""
        counts = {r: c for r, c in self.report.skipped.items() if c and r != "tie"}
        for reason, rows in self.skipped.items():  # (already in the report, unless it is a copy)
            counts[reason] = max(counts.get(reason, 0), len(rows))

        def one(reason: str, count: int) -> str:
            over = f" (over vlm.max_length={max_length})" if reason == "too_long" else ""
            # (the steps of the checks each name their rows in order)
            rows = sorted(self.skipped.get(reason) or self.report.examples.get(reason, []))
            named = ", ".join(map(str, rows[:5])) + (", ..." if count > min(len(rows), 5) else "")
            return f"{count} {reason}{over}: row{'s' * (count > 1)} {named}"

        by_count = sorted(counts.items(), key=lambda kv: -kv[1])
        return "; ".join(one(reason, count) for reason, count in by_count)

    def finish(self, keep: list[int], max_length: int | None, *, main: bool = True) -> list[int]:
        """`keep`, after the log line of the skipped rows (on the main process): every row the
        data's reading, its validation and these checks dropped, of all the rows read; no row
        kept raises with their counts."""
        counts = self.line(max_length)
        dropped = sum(c for r, c in self.report.skipped.items() if r != "tie")
        dropped = max(dropped, len(self.rows) - len(keep))
        n = max(self.report.total, len(self.rows))
        if counts and main:
            print(f"mmalign: skipped {dropped} of {n} rows: {counts}")
        if not keep:
            hint = "; raise vlm.max_length" if set(self.skipped) == {"too_long"} else ""
            raise ValueError(f"no row of data.path is usable: {counts}{hint}")
        return keep
