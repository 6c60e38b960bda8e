"""The VLM recipe: what `mmalign train` needs for `model.kind: vlm`.

It loads the model and processor, adds LoRA on the language model (or trains it in full with
the vision tower frozen, against a frozen copy), opens the pairs, skips and counts the rows the
collator cannot use (an empty column their pairs need, ...) or that do not fit
`vlm.max_length`, all before training (a bad row never stops a run mid-way), builds BPO blind
responses when the objective needs them for the rows whose data has none (a row's own `blind`
answer is kept), and scores batches with `VLMPairScorer`. Output: a PEFT adapter folder
(`adapter/`), or the full model (`model/`), plus `merged/` on request.

A `model.name_or_path` that is a PEFT adapter folder (an SFT run's `adapter/`) is merged into its
base first: training, and the reference, start from base + adapter. A LoRA run's `adapter/` then
names that folder as its base (`base_model_name_or_path`, absolute, and relative to the
adapter in `adapter_chain.BASE_LINK`; `load_vlm` merges it in again).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..data.run_record import pairs_record
from ..data.schema import ValidationReport
from ..toy.build_record import build_left_out, toy_build
from ..train.config import Config
from .adapter_chain import write_base_link
from .blind import (
    BlindAnswers,
    blind_rows_objective,
    cache_precision,
    open_or_capped,
    summary_line,
)
from .collate import PAIR_FIELDS, PairCollator, SequenceBatch
from .dropout import disable_dropout
from .fitting import OpenBound, RowCheck
from .load import load_vlm, merge_adapter
from .lora import add_lora, lora_targets, save_adapter, save_merged
from .parts import full_finetune_trains
from .precomputed import digest as _digest
from .precomputed import reference_key, reference_scores
from .scorer import VLMPairScorer

FULL_MODEL_DIR = "model"
FILTER_BATCH_SIZE = 32  # pairs per forward when data.filter scores the rows (diagnose's default)


class VLMRows(torch.utils.data.Dataset):
    """Dataset rows as dicts, with generated columns (`blind`) added and, for BPO's
    "extra rows" form, each blind pair appended as a plain row (rejected = blind). An item is
    (the row's id in `rows`, the row): errors, and the precomputed scores, name that row."""

    def __init__(self, rows: Any, keep: list[int], extra: dict[str, list[Any]] | None = None,
                 blind_as_rows: bool = False):  # fmt: skip
        self.rows, self.extra = rows, extra or {}
        self.index = [(i, False) for i in keep]
        if blind_as_rows:
            self.index += [(i, True) for i in keep]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[int, dict[str, Any]]:
        row_id, as_blind = self.index[int(i)]
        row = dict(self.rows[row_id])
        for name, values in self.extra.items():
            row[name] = values[row_id]
        if as_blind:  # the row's soft label rates its rejected answer, not the blind one
            row["rejected"], row["label"] = row["blind"], None
        return row_id, row


def open_rows(cfg: Config) -> tuple[Any, ValidationReport]:
    """The training rows: `toy:<kind>` (built once and cached), else any format
    `open_vlm_pairs` reads (MMSafe-PO, Re-Align, TRL-style, LLaVA conversations, pairs)."""
    from datasets import load_from_disk

    from ..data.saved import require_rows
    from ..data.schema import validate_rows
    from ..toy.cache import TOY_PREFIX, toy_pairs

    d = cfg.data
    if d.path.startswith(TOY_PREFIX):
        rows = load_from_disk(str(toy_pairs(d.path[len(TOY_PREFIX) :], d.toy or {})))
        if d.max_samples is not None:
            rows = rows.select(range(min(d.max_samples, len(rows))))
        checked, report = validate_rows(rows, "text")
        require_rows(checked, report, "data.path", d.path)
        return checked, report
    if d.toy:
        raise ValueError("data.toy is only for data.path: toy:<kind>")
    from .data import open_vlm_pairs

    return open_vlm_pairs(d.path, d.split, max_samples=d.max_samples, key="data.path")


# skip reasons of the data's validation that are rows the collator could not use: under
# vlm.strict they raise naming the row, as the collator's own reasons do (fitting.py)
COLLATOR_REASONS = ("image_placeholder_mismatch",)


def check_strict(report: ValidationReport, strict: bool) -> None:
    """Under `vlm.strict`, the first row the data's validation skipped for a reason of the
    collator's (`COLLATOR_REASONS`) raises naming it, as a row `RowCheck` finds would."""
    from ..data.schema import SKIP_NOTES
    from .chat_format import RowError

    for reason in COLLATOR_REASONS if strict else ():
        if report.skipped.get(reason):
            row = report.examples[reason][0]
            raise RowError(reason, SKIP_NOTES.get(reason, reason) + " (vlm.strict: true)", row)


def check_chosen_only(rows: Any, objective: Any, where: str) -> None:
    """Refuse a loss other than `sft` on chosen-only rows: PRISM-CoT rows
    (`mmalign data prism-import`) hold the marker `SFT_ONLY` as rejected, and a preference loss
    (DPO, BPO...) would train away from that marker text as if it were an answer."""
    from ..config import ConfigError
    from ..data.prism_files import SFT_ONLY

    others = [(i, t) for i, t in enumerate(objective.terms) if t.loss != "sft"]
    if not others or "rejected" not in rows.column_names:
        return
    marked = sum(1 for r in rows["rejected"] if r == SFT_ONLY)
    if marked:
        i, term = others[0]
        raise ConfigError(
            f"objective[{i}].loss: {term.loss} reads the rejected answers, but {marked} of "
            f"{len(rows)} rows of data.path {where} are chosen-only (PRISM-CoT: rejected is the "
            "SFT_ONLY marker, not an answer); train them with loss: sft only, or use pairs "
            "(PRISM-DPO, `mmalign data prism-mcts`)"
        )


class VLMRecipe:
    def __init__(self, cfg: Config, accelerator: Any):
        from ..data.cache import cache_root

        self.cfg, self.accelerator = cfg, accelerator
        m, v = cfg.model, cfg.vlm
        self.vlm = load_vlm(m.name_or_path, dtype=m.dtype, revision=m.revision,
                            key="model.name_or_path")  # fmt: skip
        # an adapter folder (an SFT run's) merged into its base: LoRA goes on the base's layers
        # (not the old adapter's), a full fine-tune saves every weight, and every reference
        # (adapters off, a copy, precomputed) is the starting model, base + adapter
        self.start_adapters = self.vlm.adapters if merge_adapter(self.vlm) else ()
        main = accelerator.is_main_process
        if self.start_adapters and main:
            print(f"mmalign: {m.name_or_path} is a PEFT adapter: training starts from it merged "
                  f"into {self.vlm.source}")  # fmt: skip
        if v.disable_dropout:  # before LoRA: lora.dropout keeps its rate (dropout.py)
            zeroed = disable_dropout(self.vlm.model)
            if zeroed and main:
                print(f"mmalign: vlm.disable_dropout: {zeroed} dropout rates of the model set to 0")
        self.stage_tokens = None
        if v.prism:  # PRISM's stage tags as special tokens, before any text is tokenized
            from .prism.format import add_stage_tokens

            self.stage_tokens = add_stage_tokens(self.vlm.model, self.vlm.processor)
            if accelerator.is_main_process:
                print(f"mmalign: {self.stage_tokens}")
        if cfg.lora is not None:  # before the data is built: a typo in a target fails now
            lora_targets(self.vlm.model, cfg.lora.target_modules)
        objective = cfg.build_objective()
        pairs = list(objective.pairs)
        for pair in pairs:
            if pair not in PAIR_FIELDS:
                raise ValueError(
                    f"objective: pair '{pair}' is not produced by the VLM scorer; use "
                    f"{', '.join(PAIR_FIELDS)}"
                )
        blind_as_rows = "blind" in pairs and v.bpo_form == "extra_rows"
        # the objective the loop trains with (train/loop.py takes `recipe.objective`)
        self.objective = objective
        if blind_as_rows:  # the released BPO code: blind pairs become extra rows of `main`
            self.objective = blind_rows_objective(objective)
            pairs = list(self.objective.pairs)
        self.rows, self.report = open_rows(cfg)
        # toy data: what its build left out (toy:hallucination's `no_similar_image` items) is in
        # the run's record too, apart from what this run's rows saw (`build_skipped`)
        built = toy_build(cfg.data.path, toy_options=cfg.data.toy)
        if main and built is not None and built.skipped:
            print(f"mmalign: {build_left_out(cfg.data.path, built, cfg.data.max_samples)}")
        check_strict(self.report, v.strict)
        check_chosen_only(self.rows, objective, cfg.data.path)
        # an objective that reads only the chosen answers (sft): rejected is never tokenized
        chosen_only = all(t.loss == "sft" for t in objective.terms) and pairs == ["main"]
        collated = ["main", "blind"] if blind_as_rows else pairs
        open_end = None
        if v.prism:  # step-level prefixes and stages cut short end without the end of turn
            from .prism.format import open_ended as open_end
        check = RowCheck(self.rows, self.report, strict=v.strict)
        extra: dict[str, list[Any]] = {}
        wants_blind = "blind" in objective.pairs
        given = (list(self.rows["blind"]) if wants_blind and "blind" in self.rows.column_names
                 else [None] * len(self.rows))  # fmt: skip
        missing = [i for i, b in enumerate(given) if b is None]
        checked: list[int] | None = None
        if wants_blind and missing:  # checked first without the blind answers: no generate for
            # a row skipped anyway (a capped answer's text, which ends open, is not known yet:
            # a row too long is measured again with its answers open, `OpenBound`, so no row
            # the final check keeps is skipped here by an end-of-turn token)
            rest = [p for p in collated if p != "blind"]
            first = OpenBound(self.vlm.processor, rest or ["main"], v.max_length,
                              chosen_only=not rest, open_end=open_end)  # fmt: skip
            checked = check.usable(first, extra)
            usable = set(checked)
            missing = [i for i in missing if i in usable]
        self.blind: BlindAnswers | None = None
        self.blind_report: dict[str, Any] | None = None
        if wants_blind and missing:  # the data's own blind answers are kept, the rest generated
            # "bos1": answers generated with one BOS where the template writes it; "missing":
            # only for the rows without one; "capped": entries name the answers cut by
            # blind_max_new_tokens (older ones cannot tell); then where `_blind` generates them
            # (the device type and dtype, none for CPU float32: the key from before they were
            # named); "checked": the rows generated for, where the checks skipped some (all
            # rows without one kept: the key from before the rows were checked first)
            some = len(missing) < sum(1 for b in given if b is None)
            key = _digest(self.vlm.weights_key, self.rows._fingerprint, v.blind_max_new_tokens,
                          "bos1", "missing", "capped",
                          *cache_precision(self.vlm.model, accelerator.device),
                          *(["checked", _digest(missing)] if some else []))  # fmt: skip
            prompts = self.rows["prompt"]
            self.blind = self._blind(cache_root() / "vlm-blind" / f"{key}.json",
                                     [prompts[i] for i in missing])  # fmt: skip
            for i, answer in zip(missing, self.blind.answers, strict=True):
                given[i] = answer
            extra["blind"] = given
            data = [a for c in ("chosen", "rejected", "blind") if c in self.rows.column_names
                    for a in self.rows[c] if a is not None]  # fmt: skip
            self.blind_report = self.blind.summary(v.blind_max_new_tokens, data)
            if main:
                print(f"mmalign: {summary_line(self.blind_report)}")
        capped = self.blind.open_texts() if self.blind is not None else frozenset()
        if capped:  # so do the capped blind answers (their text elsewhere too: counted)
            open_end = open_or_capped(open_end, capped)
        self.collator = PairCollator(self.vlm.processor, collated, v.max_length,
                                     chosen_only=chosen_only, open_end=open_end)  # fmt: skip
        keep = check.finish(check.usable(self.collator, extra, checked), v.max_length, main=main)
        self.filtered: dict[str, Any] | None = None
        if cfg.data.filter is not None:  # with the policy as loaded, before LoRA and reference
            keep = self._filter(keep, accelerator.device)
        self.collator.pairs = tuple(pairs)
        self.dataset = VLMRows(self.rows, keep, extra, blind_as_rows)
        # describe(): skipped rows (the collator's too), ties dropped and kept among the rows
        # trained on, toy data's build_skipped, as a diffusion run records them
        self.pairs_record = pairs_record(self.rows.select(keep), self.report,
                                         built.skipped if built is not None else None)  # fmt: skip
        device = accelerator.device
        model = self.vlm.model
        if cfg.lora is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.train.seed)
                new_rows = None
                if self.stage_tokens is not None and self.stage_tokens.added:
                    new_rows = [self.stage_tokens.ids[t] for t in self.stage_tokens.added]
                model = add_lora(model, cfg.lora, trainable_tokens=new_rows)
        else:
            parts = {"train_vision": v.train_vision, "train_projector": v.train_projector}
            for name, p in model.named_parameters():
                p.requires_grad_(full_finetune_trains(name, **parts))
        self.model = model.to(device)
        self.vlm.model = self.model
        reference = v.reference
        if reference == "auto":
            reference = "adapters" if cfg.lora is not None else "copy"
        if reference == "adapters" and cfg.lora is None:
            raise ValueError("vlm.reference: 'adapters' needs lora; use 'copy' or 'auto'")
        if not objective.needs_reference:
            reference = "none"
        scores = None
        if reference == "precomputed":
            key = reference_key(self.vlm, self.rows, cfg, pairs, extra, blind_as_rows,
                                bool(capped))  # fmt: skip
            scores = reference_scores(
                cache_root() / "vlm-reference" / f"{key}.json", self.vlm.core, self.dataset,
                self.collate, batch_size=cfg.train.batch_size, device=device,
                autocast=getattr(accelerator, "autocast", None), pack=v.pack_prompts,
            )  # fmt: skip
        self.scorer = VLMPairScorer(self.model, reference, scores,  # type: ignore[arg-type]
                                    pack=v.pack_prompts)  # fmt: skip
        if self.scorer.reference_model is not None:
            self.scorer.reference_model.to(device)

    # ------------------------------------------------------------------ data preparation
    def _filter(self, keep: list[int], device: torch.device) -> list[int]:
        """The ids of `keep` that `data.filter` selects: the per-pair metric of each row from
        the model as loaded (mmalign/vlm/diagnose.py, the code of `mmalign data diagnose`),
        over the rows that fit `vlm.max_length`, so both keep the same rows. The per-pair
        states are cached by weights, pairs and tokenization (diagnose_states.py): a resume,
        a rerun or a `data diagnose` of the same rows and model spares this model pass."""
        from ..config import ConfigError, InputError
        from ..data.pair_filter import parse_filter
        from .diagnose import diagnose_rows

        spec = parse_filter(str(self.cfg.data.filter))
        main = self.accelerator.is_main_process
        model = self.vlm.model.to(device)
        try:
            diag = diagnose_rows(model, self.vlm.processor, self.rows.select(keep),
                                 batch_size=FILTER_BATCH_SIZE, progress=main,
                                 model_key=self.vlm.weights_key)  # fmt: skip
        except InputError as err:  # a damaged cache entry: named under the key that read it
            raise InputError(f"data.filter: {err}") from None
        for note in diag.notes if main else []:
            print(f"mmalign: data.filter: {note}")
        kept = [keep[diag.columns["row"][j]] for j in spec.keep(diag.columns[spec.metric])]
        self.filtered = {"spec": str(spec), "kept": len(kept), "of": len(keep),
                         "dropped": len(keep) - len(kept),
                         "seconds": round(diag.seconds, 2)}  # fmt: skip
        if main:
            print(f"mmalign: data.filter {spec}: kept {len(kept)} of {len(keep)} rows, "
                  f"dropped {len(keep) - len(kept)} ({diag.seconds:.1f}s)")  # fmt: skip
        if not kept:
            raise ConfigError(
                f"data.filter {spec}: no row of {len(keep)} passes; raise the value "
                f"(`mmalign data diagnose` shows the {spec.metric} of every pair)"
            )
        return kept

    def _blind(self, path: Path, prompts: list[str]) -> BlindAnswers:
        """Blind responses of the base model to `prompts` and which were capped (built once,
        cached by model and data)."""
        from .blind import blind_responses

        if path.is_file():
            cached = BlindAnswers.from_json(path.read_text())
            if cached is not None and len(cached.answers) == len(prompts):
                return cached
        v = self.cfg.vlm
        # on the accelerator (as data.filter's pass): the model is not moved there until later
        model = self.vlm.model.to(self.accelerator.device)
        answers = blind_responses(model, self.vlm.processor, prompts,
                                  batch_size=v.blind_batch_size,
                                  max_new_tokens=v.blind_max_new_tokens)  # fmt: skip
        if self.accelerator.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(answers.to_json())
        return answers

    # ----------------------------------------------------------------- the loop's API
    def collate(self, items: list[tuple[int, dict[str, Any]]]) -> SequenceBatch:
        """A batch of `VLMRows` items. Its `rows` are the opened rows' ids (the precomputed
        reference scores' key); an error names the row of the data as read
        (`ValidationReport.source_row`), as every check of the rows names it (fitting.py)."""
        ids = [i for i, _ in items]
        return self.collator([row for _, row in items], row_ids=ids,
                             names=[self.report.source_row(i) for i in ids])  # fmt: skip

    def to_device(self, batch: SequenceBatch, rows: list[int], device: torch.device):
        return batch.to(device)

    def score(self, model, batch, seeds, *, with_reference: bool):
        return self.scorer(model, batch, with_reference=with_reference)

    def validate(self, step: int) -> None:
        return None

    def save(self, output_dir: Path) -> dict[str, Any]:
        if self.cfg.lora is not None:
            start = self.start_adapters[-1] if self.start_adapters else None
            if start is not None:  # trained on that adapter merged in: it is this one's base
                # absolute, as PEFT and transformers read the field (a model to load from
                # anywhere); `adapter_chain.BASE_LINK` records it relative to the adapter too
                resolved = str(Path(start).resolve())
                self.model.peft_config["default"].base_model_name_or_path = resolved
            path = save_adapter(self.model, self.vlm.processor, output_dir)
            if start is not None:  # run folders moved or copied together keep their chain
                write_base_link(path, start)
            saved: dict[str, Any] = {"kind": "peft_adapter", "path": str(path)}
            if self.cfg.vlm.merge:  # recording what it holds: start adapters and this one
                held = [*self.start_adapters, path]
                merged = save_merged(self.model, self.vlm.processor, output_dir,
                                     self.vlm.source, held)  # fmt: skip
                saved["merged"] = str(merged)
            return saved
        folder = output_dir / FULL_MODEL_DIR
        self.model.save_pretrained(folder, safe_serialization=True)
        self.vlm.processor.save_pretrained(folder)
        return {"kind": "model", "path": str(folder)}

    def describe(self) -> dict[str, Any]:
        return {
            "task": "vlm",
            "base": self.vlm.source,
            "family": self.vlm.family,
            "rows": len(self.dataset),
            **self.pairs_record,  # skipped rows, ties dropped and kept; toy: build_skipped
            "reference": self.scorer.reference,
            **({"start_adapters": list(self.start_adapters)} if self.start_adapters else {}),
            **({"blind": self.blind_report} if self.blind_report is not None else {}),
            **({"filter": self.filtered} if self.filtered is not None else {}),
            **({"stage_tokens": str(self.stage_tokens)} if self.stage_tokens else {}),
        }
