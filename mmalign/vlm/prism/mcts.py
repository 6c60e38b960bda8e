"""PRISM's step-level search (Li et al. 2025, section 3.2, "PRISM-DPO"): one tree per request.

A node is a whole stage of the chain of thought (the root is the bare request); its children
are samples of the next stage. One iteration descends from the root by UCB,

    UCB(child) = v(child) + c * sqrt(ln N(parent) / N(child)),   c = 1.5,

to a leaf; a leaf that can still grow is expanded with `children` (3) samples of its next stage,
each scored by the judge in [-1, 1] (no rollouts) and backed up to every ancestor (N += 1,
W += score; v = W / N). A terminal leaf (an OUTPUT stage, a failed sample, `max_depth`) is
backed up again with its own score. 200 iterations per tree, depth at most 5.

Pairs: siblings i, j with `v_i - v_j > margin` (0.4) and `v_i >= min_chosen` (0.8); chosen and
rejected are the full prefixes (every stage from the root down to the node), so they share
their parent's prefix exactly. A node whose every child sample failed the judge (an `unjudged`
dead end, scored by its own value alone) is in no pair: its label would rest on judgements
that never happened.

This module is the bookkeeping only: generation (`generate.py`) and judging (`judges.py`) are
handed in by the driver (`search.py`), which runs many trees in lock-step.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from ...data.prism_cot import STAGES


@dataclass(frozen=True)
class MCTSConfig:
    iterations: int = 200
    children: int = 3
    max_depth: int = 5
    c: float = 1.5
    margin: float = 0.4
    min_chosen: float = 0.8

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.children < 1 or self.max_depth < 1:
            raise ValueError("iterations, children and max_depth must be >= 1")
        if self.c < 0 or self.margin < 0:
            raise ValueError("c and margin must be >= 0")


@dataclass
class Node:
    id: int
    parent: int | None
    depth: int  # 0: the root (the request)
    stage: str | None  # the stage this node wrote
    text: str  # that stage with its tags
    score: float | None = None  # the judge's value when the node was made
    visits: int = 0
    total: float = 0.0
    children: list[int] = field(default_factory=list)
    terminal: bool = False
    failed: str | None = None  # "unclosed": cut at the length limit, scored as a failure
    unjudged: bool = False  # a dead end: every child sample failed the judge (in no pair)

    @property
    def value(self) -> float:
        return self.total / self.visits if self.visits else 0.0


@dataclass(frozen=True)
class Pair:
    parent: int
    chosen: int
    rejected: int
    chosen_text: str
    rejected_text: str
    chosen_value: float
    rejected_value: float
    stage: str


FAILED_SCORE = -1.0  # a sample that never closed its stage


class Tree:
    """One request's search tree; `row` is the data row's index."""

    def __init__(self, row: int, config: MCTSConfig):
        self.row, self.config = row, config
        self.nodes = [Node(0, None, 0, None, "")]
        self.iterations = 0
        self.stats: Counter[str] = Counter()

    # ------------------------------------------------------------------------- queries
    def prefix(self, node: int) -> str:
        """The assistant text from the root down to `node`: its stages in order."""
        parts = []
        while node is not None and node != 0:
            parts.append(self.nodes[node].text)
            node = self.nodes[node].parent  # type: ignore[assignment]
        return "".join(reversed(parts))

    def next_stage(self, node: int) -> str:
        return STAGES[self.nodes[node].depth]

    def _ucb(self, parent: Node, child: Node) -> float:
        explore = math.sqrt(math.log(max(parent.visits, 1)) / child.visits)
        return child.value + self.config.c * explore

    @property
    def done(self) -> bool:
        return self.iterations >= self.config.iterations or self.nodes[0].terminal

    # ----------------------------------------------------------------------- the search
    def _descend(self) -> Node:
        node = self.nodes[0]
        while node.children:
            node = max((self.nodes[c] for c in node.children), key=lambda ch: self._ucb(node, ch))
        return node

    def _backup(self, node: Node, value: float) -> None:
        current: Node | None = node
        while current is not None:
            current.visits += 1
            current.total += value
            current = None if current.parent is None else self.nodes[current.parent]

    def step(self) -> int | None:
        """Run iterations until one needs an expansion: returns the leaf to expand, or None when
        the tree is done. Terminal leaves are backed up again on the way (one iteration each)."""
        while not self.done:
            leaf = self._descend()
            if not leaf.terminal:
                return leaf.id
            if leaf.score is not None:
                self._backup(leaf, leaf.score)
            self.iterations += 1
        return None

    def expand(self, leaf: int, samples: list[tuple[str, bool]],
               scores: list[float | None]) -> list[int]:  # fmt: skip
        """Add the samples (text, closed) of `leaf`'s next stage with their judge scores (None:
        the judge failed on it, the sample is skipped); back each up. Repeated texts are kept
        once. Returns the new nodes' ids. One iteration.

        Each sample is counted under one reason: an unclosed sample is always `unclosed` (a
        repeat of an earlier unclosed text adds no second node, yet counts, so the failure
        rate of generation is not hidden among `duplicates`), a closed repeat `duplicates`."""
        parent = self.nodes[leaf]
        stage = self.next_stage(leaf)
        seen = {self.nodes[c].text for c in parent.children}
        made, skipped = [], 0
        for (text, closed), score in zip(samples, scores, strict=True):
            if not closed:
                self.stats["unclosed"] += 1
                if text in seen:
                    continue
                score, failed = FAILED_SCORE, "unclosed"
            elif text in seen:
                self.stats["duplicates"] += 1
                continue
            elif score is None:
                self.stats["skipped"] += 1
                skipped += 1
                continue
            else:
                failed = None
            seen.add(text)
            depth = parent.depth + 1
            node = Node(len(self.nodes), leaf, depth, stage, text, float(score), failed=failed)
            node.terminal = failed is not None or stage == STAGES[-1] or \
                depth >= self.config.max_depth  # fmt: skip
            self.nodes.append(node)
            parent.children.append(node.id)
            self._backup(node, node.score)  # type: ignore[arg-type]
            made.append(node.id)
            self.stats["nodes"] += 1
        if not made:  # nothing usable came back: the leaf cannot grow
            parent.terminal = True
            self.stats["dead_ends"] += 1
            if skipped:  # (every closed sample without a node here failed the judge)
                parent.unjudged = True
                self.stats["unjudged_dead_ends"] += 1
        self.iterations += 1
        return made

    # -------------------------------------------------------------------------- output
    def _sibling_pairs(self) -> list[tuple[int, Node, Node]]:
        """(parent, chosen, rejected): siblings with `v_i - v_j > margin`, `v_i >= min_chosen`."""
        cfg, out = self.config, []
        for parent in self.nodes:
            kids = [self.nodes[c] for c in parent.children]
            out += [(parent.id, a, b) for a in kids for b in kids
                    if a.value - b.value > cfg.margin and a.value >= cfg.min_chosen]  # fmt: skip
        return out

    def pairs(self) -> list[Pair]:
        """Sibling pairs by the rule (section 3.2), none with an `unjudged` dead end."""
        return [Pair(p, a.id, b.id, self.prefix(a.id), self.prefix(b.id), a.value, b.value,
                     a.stage or "")
                for p, a, b in self._sibling_pairs() if not (a.unjudged or b.unjudged)]  # fmt: skip

    def withheld_pairs(self) -> int:
        """Pairs the rule gives that `pairs` leaves out: one side an `unjudged` dead end."""
        return sum(a.unjudged or b.unjudged for _, a, b in self._sibling_pairs())

    def summary(self) -> dict[str, Any]:
        depth = Counter(n.depth for n in self.nodes[1:])
        return {"row": self.row, "iterations": self.iterations, "nodes": len(self.nodes) - 1,
                "by_depth": {str(k): v for k, v in sorted(depth.items())},
                "root_value": self.nodes[0].value, "pairs": len(self.pairs()),
                "pairs_withheld_unjudged": self.withheld_pairs(), **dict(self.stats)}  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "config": asdict(self.config), "iterations": self.iterations,
                "stats": dict(self.stats), "nodes": [asdict(n) for n in self.nodes]}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tree:
        tree = cls(int(data["row"]), MCTSConfig(**data["config"]))
        tree.nodes = [Node(**n) for n in data["nodes"]]
        tree.iterations = int(data["iterations"])
        tree.stats = Counter(data["stats"])
        if tree.nodes and "unjudged" not in data["nodes"][0]:
            tree._mark_old_dead_ends()
        return tree

    def _mark_old_dead_ends(self) -> None:
        """A tree saved before `Node.unjudged`: its dead ends (terminal, childless, not failed,
        OUTPUT or at max depth) had every sample closed and skipped by the judge, since every
        expansion gets `children` samples and only skipped ones leave no node."""
        for node in self.nodes:
            if node.terminal and not node.children and node.failed is None and \
                    node.stage != STAGES[-1] and node.depth < self.config.max_depth:  # fmt: skip
                node.unjudged = True
                self.stats["unjudged_dead_ends"] += 1
