"""What a reader did with every row: `ValidationReport` (kept, or skipped with a reason and
example indices) and `SKIP_NOTES`, what a skip reason means where its name alone could mislead.

Every reader in `mmalign.data` fills one (`schema.validate_rows`, `pickapic.load_pickapic`, the
VLM readers); `mmalign.data.schema` re-exports both names.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

# what a skip reason means, where its name alone could mislead; `str(ValidationReport)` adds it
SKIP_NOTES = {
    "prompt_mismatch": "chosen and rejected differ before their last message (two prompts, "
    "not one shared prompt)",
    "not_different": "Pick-a-Pic's are_different is false (two equal images); "
    "data.keep_identical: true keeps them, as Diffusion-DPO's code does",
    "image_placeholder_mismatch": "the prompt's <image> placeholders differ in number from "
    "the row's images",
    "visual_needs_one_image": "the visual (rDPO) pair replaces the one shown image by the "
    "retrieved one; the row shows none or several",
    "pretemplated_prompt": "the prompt already carries the chat template's framing (role tags, "
    "generation prompt, special tokens the template writes); give the raw user text, mmalign "
    "applies the template",
    "special_token_in_prompt": "the prompt holds the tokenizer's BOS or EOS as text (as <s>): the "
    "tokenizer reads it as that token, a sequence start or end mid-prompt; write it otherwise",
}


@dataclass
class ValidationReport:
    """What happened to every row: kept, or skipped with a reason and example indices."""

    name: str = "rows"
    total: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[int]] = field(default_factory=dict)
    max_examples: int = 5
    # the index in the data as read of each row kept (`keep(index)`): messages name that row
    # (8 bytes a row, not a list's ~36: Pick-a-Pic v2's train split keeps about a million)
    kept_rows: array[int] = field(default_factory=lambda: array("q"))
    # rows kept as ties (label 0.5), where the reader applies a tie policy (Pick-a-Pic's)
    ties_kept: int = 0
    # a lazy stream's rows in one pass (`load_pickapic(streaming=True)`), where known: the report
    # describes one pass, so once `total` reaches it `keep` and `skip` count no more (a second
    # epoch reads the same rows again, in whatever order). A pass broken off (`next(iter(...))`
    # converts a whole batch, up to 1000 rows) still counts, and the next tops the report up to
    # `pass_rows` from its own first rows: the report then counts those rows twice and the
    # pass's last rows (and their skips) not at all, so read a stream whole before trusting
    # its report. None (no count known, e.g. a hub card without one): every row is counted.
    # DataLoader workers count in copies of the report, not in this one.
    pass_rows: int | None = None

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def complete(self) -> bool:
        """Whether the report holds one whole pass of a stream of `pass_rows` rows."""
        return self.pass_rows is not None and self.total >= self.pass_rows

    def keep(self, index: int | None = None, *, tie: bool = False) -> None:
        """Count a row kept (`tie`: a tie kept with label 0.5, also counted in `ties_kept`)."""
        if self.complete:
            return
        self.total += 1
        self.kept += 1
        self.ties_kept += tie
        if index is not None:
            self.kept_rows.append(index)

    def source_row(self, i: int) -> int:
        """The index in the data as read of row `i` of the rows kept (`i` itself where the
        reader recorded none)."""
        return self.kept_rows[i] if self.kept_rows else i

    def skip(self, index: int, reason: str, *, strict: bool = False) -> None:
        if strict:
            raise ValueError(f"{self.name}: row {index}: {reason}")
        if self.complete:
            return
        self.total += 1
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        seen = self.examples.setdefault(reason, [])
        if len(seen) < self.max_examples:
            seen.append(index)

    def __str__(self) -> str:
        """Tied pairs apart from skipped rows, as a run's record (`ties: dropped, kept`): a tie
        dropped under the `drop` policy is an outcome of the labels, not a row unread."""
        dropped = self.skipped.get("tie", 0)
        others = self.num_skipped - dropped  # rows unusable: ties are not among them
        line = f"{self.name}: read {self.total}, kept {self.kept}, skipped {others}"
        if dropped or self.ties_kept:
            line += f"; ties: {dropped} dropped, {self.ties_kept} kept (label 0.5)"
        lines = [line]
        for reason, count in sorted(self.skipped.items(), key=lambda kv: (kv[0] == "tie", -kv[1])):
            rows = ", ".join(map(str, self.examples.get(reason, [])))
            more = ", ..." if count > len(self.examples.get(reason, [])) else ""
            note = f": {SKIP_NOTES[reason]}" if reason in SKIP_NOTES else ""
            what = "tied pairs dropped" if reason == "tie" else reason
            lines.append(f"  {what}: {count} (rows {rows}{more}){note}")
        return "\n".join(lines)
