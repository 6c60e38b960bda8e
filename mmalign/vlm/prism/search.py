"""Run PRISM's search (`mcts.py`) over many requests: trees in lock-step, batched, resumable.

Trees run in batches of `trees_per_batch`: every tree advances until it needs an expansion,
then one generation pass samples the next stage for all of them (`children` samples each,
`StageGenerator` splitting it into `generate` calls of `batch_size` sequences) and one judge
call scores every new node. A batch's random stream is seeded from (seed, first tree), so a
batch gives the same trees whenever it runs; each tree is written to `trees/tree-<row>.json`
as soon as it is done. A rerun with the same settings loads the finished trees and reruns only
the batches with a tree missing, which gives the trees an uninterrupted run would have (a
saved tree in such a batch is searched again with it: `trees_researched`, not `trees_loaded`). The
settings compared (`Search.settings`, saved as `search.json`; `settings.py`) are everything the
trees depend on: the search config, batching and seed, the model's weights, a fingerprint of
the rows, the judge (and a VLM judge's weights), the sampling (temperature, max_new_tokens,
batch_size) and the device type and dtype the models run in (one seed samples other trees on a
GPU or in bfloat16); a rerun that differs in any is refused, since loaded trees would silently
mix two searches (`prism-mcts` compares all but the weights before any model loads). A
search.json without the device and dtype was searched on the CPU in float32
(`BEFORE_PRECISION`), the only way before they were recorded, and resumes there.

Nothing stops the search mid-way without the finished trees on disk: a sample that never
closes its stage is a failed node (counted), a judge that raises or answers outside [-1, 1] is
counted and its node skipped. A judge call that raises for a whole batch is retried one item at
a time (counted as `judge_batch_failures`, the first error printed once); an item that raises
alone is a judge failure like the others. A judge that has failed on every item it was ever
given stops the search (an InputError naming it), as do KeyboardInterrupt, SystemExit and
MemoryError.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ...config import InputError
from ..collate import row_images
from .generate import StageGenerator, StageRequest
from .judges import Judge, JudgeItem, Verdict, check_verdict
from .mcts import MCTSConfig, Tree
from .settings import (
    BEFORE_PRECISION,
    SAMPLING,
    check_resume,
    default_trees_per_batch,
    planned_settings,
    precision_record,
    rows_fingerprint,
)


def batch_seed(seed: int, first: int) -> int:
    key = f"prism-mcts:{seed}:{first}".encode()
    return int(hashlib.sha256(key).hexdigest()[:12], 16)


def tree_file(out: Path, row: int) -> Path:
    return out / "trees" / f"tree-{row:06d}.json"


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # a tree file is whole or absent


class Search:
    """The search over `rows` with `generate` and `judge` (see the module docstring). `model`
    identifies the weights that generate (`VLM.weights_key`), for the resume check;
    `precision` is {"device": type, "dtype": name} the models run in (None: the generating
    model's, `devices.precision_of`; CPU float32 for a generator without one);
    `data_fingerprint` the rows' `rows_fingerprint` where the caller has it (hashed on first
    use otherwise)."""

    def __init__(self, rows: Sequence[dict[str, Any]], generate: StageGenerator, judge: Judge,
                 config: MCTSConfig, out: str | Path, *, trees_per_batch: int | None = None,
                 seed: int = 0, progress: bool = True, model: Any = None,
                 precision: Mapping[str, str] | None = None,
                 data_fingerprint: str | None = None):  # fmt: skip
        if trees_per_batch is None:
            trees_per_batch = default_trees_per_batch(generate.batch_size, config.children)
        if trees_per_batch < 1:
            raise ValueError(f"trees_per_batch must be >= 1, got {trees_per_batch}")
        self.rows, self.generate, self.judge, self.config = rows, generate, judge, config
        self.out, self.trees_per_batch, self.seed = Path(out), trees_per_batch, seed
        self.progress, self.model = progress, model
        if precision is None:
            from ...devices import precision_of

            net = getattr(generate, "model", None)
            precision = precision_of(net) if hasattr(net, "parameters") else BEFORE_PRECISION
        self.precision = precision_record(precision)
        self._rows_fingerprint = data_fingerprint  # else hashed once, on first use
        self.counts: Counter[str] = Counter()  # this run's generation and judge work
        self.seconds = {"generate": 0.0, "judge": 0.0}
        self.judge_batch_error: str | None = None  # the first judge call that raised, by type
        self.judge_answered = False  # whether the judge has given one verdict (this run)

    def settings(self) -> dict[str, Any]:
        """Everything the trees depend on, as `search.json` holds it (`settings.py`)."""
        if self._rows_fingerprint is None:
            self._rows_fingerprint = rows_fingerprint(self.rows)
        mine = planned_settings(len(self.rows), self._rows_fingerprint, self.config,
                                trees_per_batch=self.trees_per_batch, seed=self.seed,
                                judge=self.judge.name,
                                sampling={k: getattr(self.generate, k, None) for k in SAMPLING},
                                precision=self.precision)  # fmt: skip
        mine["model"] = self.model
        # a VLM judge is named by its folder: its weights too, or a judge retrained in place
        # would resume trees it never scored (absent for judges without weights: toy, callable)
        judge_weights = getattr(getattr(self.judge, "vlm", None), "weights_key", None)
        if judge_weights is not None:
            mine["judge_weights"] = judge_weights
        return json.loads(json.dumps(mine, default=str))

    def _checksettings(self) -> None:
        """A rerun into the same folder must use the same settings (else its trees differ)."""
        mine = self.settings()
        if not check_resume(self.out, mine):
            _write(self.out / "search.json", mine)

    def run(self) -> list[Tree]:
        """Every row's tree, loaded when already done, else searched (and written)."""
        self._checksettings()
        trees: list[Tree | None] = [None] * len(self.rows)
        for i in range(len(self.rows)):
            if tree_file(self.out, i).is_file():
                trees[i] = Tree.from_json(json.loads(tree_file(self.out, i).read_text()))
        n, per = len(self.rows), self.trees_per_batch
        todo = [s for s in range(0, n, per) if any(t is None for t in trees[s : s + per])]
        # a saved tree in a batch that runs again is searched again (the batch's random stream
        # needs every tree of it): loaded means taken whole, without a search
        again = sum(t is not None for s in todo for t in trees[s : s + per])
        self.counts["trees_loaded"] = sum(t is not None for t in trees) - again
        self.counts["trees_researched"] = again
        bar = tqdm(total=len(self.rows), initial=len(self.rows) - sum(
            min(self.trees_per_batch, len(self.rows) - s) for s in todo),
            desc="prism-mcts trees", unit="tree", disable=not self.progress)  # fmt: skip
        for start in todo:
            ids = list(range(start, min(start + self.trees_per_batch, len(self.rows))))
            for tree in self._batch(ids, bar):
                trees[tree.row] = tree
        bar.close()
        return [t for t in trees if t is not None]

    def _batch(self, ids: list[int], bar: Any) -> list[Tree]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_seed(self.seed, ids[0]))
            trees = [Tree(i, self.config) for i in ids]
            live = list(trees)
            while live:
                pending: list[tuple[Tree, int]] = []
                for tree in list(live):
                    leaf = tree.step()
                    if leaf is None:
                        _write(tree_file(self.out, tree.row), tree.to_json())
                        live.remove(tree)
                        bar.update(1)
                    else:
                        pending.append((tree, leaf))
                if pending:
                    self._expand(pending)
        return trees

    def _expand(self, pending: list[tuple[Tree, int]]) -> None:
        requests = []
        for tree, leaf in pending:
            row = self.rows[tree.row]
            requests.append(StageRequest(row["prompt"], tuple(row_images(row)), tree.prefix(leaf),
                                         tree.next_stage(leaf)))  # fmt: skip
        t0 = time.perf_counter()
        samples = self.generate(requests, self.config.children)
        self.seconds["generate"] += time.perf_counter() - t0
        self.counts["samples"] += sum(len(s) for s in samples)
        items, where = [], []
        for p, ((tree, _), req, got) in enumerate(zip(pending, requests, samples, strict=True)):
            for k, s in enumerate(got):
                if s.closed:
                    items.append(JudgeItem(self.rows[tree.row], req.prefix + s.text, req.stage))
                    where.append((p, k))
        t0 = time.perf_counter()
        verdicts = self._judged(items) if items else []
        self.seconds["judge"] += time.perf_counter() - t0
        self.counts["judge_calls"] += len(items)
        scores: dict[tuple[int, int], float | None] = {}
        for key, verdict in zip(where, verdicts, strict=True):
            value, problem = check_verdict(verdict)
            if problem is not None:
                self.counts[problem] += 1
                pending[key[0]][0].stats[problem] += 1
            scores[key] = value
        for p, ((tree, leaf), got) in enumerate(zip(pending, samples, strict=True)):
            made = tree.expand(leaf, [(s.text, s.closed) for s in got],
                               [scores.get((p, k)) for k in range(len(got))])  # fmt: skip
            self.counts["nodes"] += len(made)  # samples that became nodes: no duplicates

    def _call(self, items: list[JudgeItem]) -> list[Verdict]:
        verdicts = self.judge(items)
        if len(verdicts) != len(items):
            return [RuntimeError("the judge returned the wrong number of values")] * len(items)
        return list(verdicts)

    def _judged(self, items: list[JudgeItem]) -> list[Verdict]:
        """The judge's verdicts on `items`; a call that raises for the batch is retried one item
        at a time, and an item that raises alone gets its exception as its verdict. A judge
        that has failed on every item it was ever given (raised, or returned the exception)
        is broken, not flaky: the search stops (finished trees are saved) rather than save
        trees that no judgement shaped, which a rerun with the mended judge would load."""
        try:
            return self._unless_broken(self._call(items))
        except MemoryError:
            raise
        except InputError:  # _unless_broken's own stop
            raise
        except Exception as err:
            self.counts["judge_batch_failures"] += 1
            if self.judge_batch_error is None:
                self.judge_batch_error = f"{type(err).__name__}: {err}"
                print(f"prism-mcts: the judge {self.judge.name!r} raised on a batch of "
                      f"{len(items)} items ({self.judge_batch_error}); judging them one at a "
                      "time (counted as judge_batch_failures; said once)",
                      file=sys.stderr)  # fmt: skip
            if len(items) == 1:  # already one item: its exception is its verdict
                return self._unless_broken([err])
        out: list[Verdict] = []
        for item in items:
            try:
                out += self._call([item])
            except MemoryError:
                raise
            except Exception as err:
                out.append(err)
        return self._unless_broken(out)

    def _unless_broken(self, verdicts: list[Verdict]) -> list[Verdict]:
        failed = [v for v in verdicts if isinstance(v, BaseException)]
        self.judge_answered |= len(failed) < len(verdicts)
        if not self.judge_answered and failed:
            first = failed[0]
            raise InputError(
                f"prism-mcts: --judge {self.judge.name}: it failed on every item it was given "
                f"({type(first).__name__}: {first}); nothing was judged, so the search stops "
                "here (finished trees are saved; mend the judge and run again to resume)"
            ) from first
        return verdicts


def pair_rows(rows: Sequence[dict[str, Any]], trees: Sequence[Tree]) -> list[dict[str, Any]]:
    """PreferencePair rows from every tree's sibling pairs: the row's prompt and images (its
    `images` list when it has one, as the search saw them through `row_images`, else its
    `image`), chosen and rejected the full prefixes; `source` names the stage the two differ
    in."""
    out = []
    for tree in trees:
        row = rows[tree.row]
        shown = {"images": list(row["images"])} if row.get("images") else \
            {"image": row.get("image")}  # fmt: skip
        for pair in tree.pairs():
            out.append({"prompt": row["prompt"], **shown,
                        "chosen": pair.chosen_text, "rejected": pair.rejected_text,
                        "label": 1.0, "source": f"prism-mcts:{pair.stage}"})  # fmt: skip
    return out


def pairs_dataset(pairs: list[dict[str, Any]]) -> tuple[Any, Any]:
    """(Dataset, ValidationReport) of `pair_rows`' rows. PreferencePair has no `images` field,
    so rows with an `images` list are saved the way the importers save theirs
    (`vlm_rows.to_dataset`: an `images` column, or `image` when none shows more than one),
    which `open_vlm_pairs` reads back for training."""
    from ...data.schema import ValidationReport, validate_rows
    from ...data.vlm_rows import to_dataset

    if not any("images" in p for p in pairs):
        return validate_rows(pairs, "text")
    report = ValidationReport(name="prism-mcts pairs")
    rows = []
    for p in pairs:
        rows.append({**{k: v for k, v in p.items() if k != "image"}, "images": row_images(p)})
        report.keep()
    return to_dataset(rows, report, report.name), report


def summarize(search: Search, trees: Sequence[Tree], seconds: float) -> dict[str, Any]:
    totals: Counter[str] = Counter()
    for tree in trees:
        totals.update(tree.stats)
    made, added = search.counts["samples"], search.counts["nodes"]

    def per_second(count: int) -> float | None:
        return round(count / seconds, 2) if seconds else None

    return {
        "trees": len(trees), "trees_loaded": search.counts["trees_loaded"],
        "trees_researched": search.counts["trees_researched"],
        "nodes": sum(len(t.nodes) - 1 for t in trees), "pairs": sum(len(t.pairs()) for t in trees),
        # pairs the rule gives with an unjudged dead end on one side: not emitted
        "pairs_withheld_unjudged": sum(t.withheld_pairs() for t in trees),
        "this_run": {"samples": made, "nodes": added, "judge_calls": search.counts["judge_calls"],
                     "judge_batch_failures": search.counts["judge_batch_failures"],
                     "first_judge_batch_error": search.judge_batch_error,
                     "generate_calls": search.generate.calls, "seconds": round(seconds, 2),
                     "generate_seconds": round(search.seconds["generate"], 2),
                     "judge_seconds": round(search.seconds["judge"], 2),
                     # nodes: samples added to a tree (not duplicates, skipped or dropped)
                     "nodes_per_second": per_second(added),
                     "samples_per_second": per_second(made),
                     "judge_calls_per_second": per_second(search.counts["judge_calls"])},
        "failures": {k: totals[k] for k in ("unclosed", "judge_error", "judge_out_of_range",
                                            "skipped", "duplicates", "dead_ends",
                                            "unjudged_dead_ends")},
        "settings": search.settings(),
        "per_tree": [t.summary() for t in trees],
    }  # fmt: skip
