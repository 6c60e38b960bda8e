"""PRISM search review 5: a dead end whose children all failed the judge is in no pair (and
is counted), a judge that raises for a whole batch is retried item by item instead of ending
the search, and a resume counts as loaded only the trees it did not search again."""

from __future__ import annotations

import json
import shutil

import pytest
from test_prism_mcts import FakeGenerator, FakeJudge, rows

from mmalign.config import InputError
from mmalign.data.prism_cot import close_tag, open_tag, parse_stages
from mmalign.vlm.prism.generate import StageSample
from mmalign.vlm.prism.mcts import MCTSConfig, Tree
from mmalign.vlm.prism.search import Search, pair_rows, summarize, tree_file


def summary_line(summary: dict) -> str:
    from mmalign.vlm.prism.cli import summary_line as line

    return line(summary)


def _stage(stage: str, word: str) -> str:
    return open_tag(stage) + word + close_tag(stage)


# --------------------------------------------------------------- 1. unjudged dead ends
def _two_problems(config: MCTSConfig) -> Tree:
    """The root expanded into a good PROBLEM (1.0) and a bad one (-1.0): a pair."""
    tree = Tree(0, config)
    tree.expand(tree.step(), [(_stage("PROBLEM", "a"), True), (_stage("PROBLEM", "b"), True)],
                [1.0, -1.0])  # fmt: skip
    return tree


def test_a_dead_end_whose_children_all_failed_the_judge_is_in_no_pair():
    tree = _two_problems(MCTSConfig(iterations=20, children=2))
    assert [(p.chosen, p.rejected) for p in tree.pairs()] == [(1, 2)]
    # every CAPTION sample under the good node failed the judge: no judgement below it
    made = tree.expand(1, [(_stage("CAPTION", "x"), True), (_stage("CAPTION", "y"), True)],
                       [None, None])  # fmt: skip
    assert made == [] and tree.nodes[1].terminal
    assert tree.stats["dead_ends"] == 1 and tree.stats["unjudged_dead_ends"] == 1
    assert tree.pairs() == []  # neither as chosen ...
    assert tree.summary()["unjudged_dead_ends"] == 1
    # ... nor as rejected
    low = _two_problems(MCTSConfig(iterations=20, children=2))
    low.expand(2, [(_stage("CAPTION", "x"), True)], [None])
    assert low.pairs() == [] and low.stats["unjudged_dead_ends"] == 1
    # the mark survives a save and load
    again = Tree.from_json(json.loads(json.dumps(tree.to_json())))
    assert again.pairs() == [] and again.nodes[1].unjudged
    # a tree saved before the mark: its dead end is found again (every sample was skipped)
    old = tree.to_json()
    old["stats"].pop("unjudged_dead_ends")
    for node in old["nodes"]:
        node.pop("unjudged")
    loaded = Tree.from_json(old)
    assert [n.unjudged for n in loaded.nodes] == [False, True, False]
    assert loaded.pairs() == [] and loaded.stats["unjudged_dead_ends"] == 1
    deep = _two_problems(MCTSConfig(iterations=20, children=2, max_depth=1)).to_json()
    for node in deep["nodes"]:
        node.pop("unjudged")
    assert len(Tree.from_json(deep).pairs()) == 1  # terminal by max depth: not a dead end


def test_dead_ends_from_other_causes_still_pair():
    deep = _two_problems(MCTSConfig(iterations=20, children=2, max_depth=1))  # max depth
    assert deep.nodes[1].terminal and deep.stats["unjudged_dead_ends"] == 0
    assert [(p.chosen, p.rejected) for p in deep.pairs()] == [(1, 2)]
    empty = _two_problems(MCTSConfig(iterations=20, children=2))
    assert empty.expand(1, [], []) == []  # nothing came back: a dead end, not unjudged
    assert empty.stats["dead_ends"] == 1 and empty.stats["unjudged_dead_ends"] == 0
    assert [(p.chosen, p.rejected) for p in empty.pairs()] == [(1, 2)]


class TwoWords:
    """'good' and 'bad' samples of every stage, closed (no randomness)."""

    temperature, max_new_tokens, batch_size = 1.0, 8, 8
    calls = 0

    def __call__(self, requests, samples):
        self.calls += 1
        words = ("good", "bad")
        return [[StageSample(_stage(r.stage, words[k % 2]), True, 3) for k in range(samples)]
                for r in requests]  # fmt: skip


class NoCaptions:
    """PROBLEM: good 1, bad -1; every CAPTION fails (its verdict an exception)."""

    name = "no-captions"

    def __call__(self, items):
        return [ValueError("no caption judge") if it.stage == "CAPTION" else
                {"good": 1.0, "bad": -1.0}[parse_stages(it.text).stages[it.stage]]
                for it in items]  # fmt: skip


def test_a_search_emits_no_pair_resting_on_missing_judgements(tmp_path):
    config = MCTSConfig(iterations=6, children=2)
    s = Search(rows(2), TwoWords(), NoCaptions(), config, tmp_path, trees_per_batch=2,
               progress=False)  # fmt: skip
    trees = s.run()
    assert all(t.stats["unjudged_dead_ends"] >= 1 for t in trees)
    assert pair_rows(rows(2), trees) == []
    summary = summarize(s, trees, 1.0)
    assert summary["failures"]["unjudged_dead_ends"] == sum(
        t.stats["unjudged_dead_ends"] for t in trees)  # fmt: skip
    assert summary["pairs"] == 0 and summary["pairs_withheld_unjudged"] >= 2
    line = summary_line(summary)
    assert "unjudged_dead_ends" in line and "pairs (2 withheld: an unjudged dead end" in line


# ---------------------------------------------------------------- 2. a judge batch raising
class BatchShy(FakeJudge):
    """FakeJudge, but a call with more than one item raises; 'odd' raises even alone."""

    name = "batch-shy"

    def __init__(self):
        self.calls: list[int] = []
        self.single_raised = 0

    def __call__(self, items):
        self.calls.append(len(items))
        if len(items) > 1:
            raise TypeError("cannot judge a batch")
        got = super().__call__(items)
        if isinstance(got[0], ValueError):
            self.single_raised += 1
            raise got[0]
        return got


def test_a_judge_raising_on_a_batch_is_retried_item_by_item(tmp_path, capsys):
    config = MCTSConfig(iterations=12, children=3)
    s = Search(rows(3), FakeGenerator(), BatchShy(), config, tmp_path, trees_per_batch=3,
               progress=False)  # fmt: skip
    trees = s.run()  # the search goes on
    assert len(trees) == 3 and all(len(t.nodes) > 1 for t in trees)
    failures, batches = s.counts["judge_batch_failures"], sum(n > 1 for n in s.judge.calls)
    # every batch call raised; a round with one item to judge is a batch of one
    assert 0 < batches <= failures <= batches + s.judge.single_raised
    assert sum(t.stats["judge_error"] for t in trees) > 0  # 'odd' alone: a judge failure
    err = capsys.readouterr().err
    assert err.count("TypeError: cannot judge a batch") == 1  # said once, type and message
    summary = summarize(s, trees, 1.0)
    assert summary["this_run"]["judge_batch_failures"] == failures
    assert "judge batch failures" in summary_line(summary)
    # the same trees as a judge that never raised on a batch
    plain = Search(rows(3), FakeGenerator(), FakeJudge(), config, tmp_path / "plain",
                   trees_per_batch=3, progress=False).run()  # fmt: skip
    assert [t.to_json()["nodes"] for t in trees] == [t.to_json()["nodes"] for t in plain]


def test_a_judge_that_always_raises_stops_the_search_unsaved(tmp_path, capsys):
    """Broken, not flaky: no tree is saved that a rerun with a mended judge would load."""

    class Broken(FakeJudge):
        name = "broken"

        def __init__(self):
            self.calls: list[int] = []

        def __call__(self, items):
            self.calls.append(len(items))
            raise RuntimeError("judge server down")

    judge = Broken()
    s = Search(rows(1), TwoWords(), judge, MCTSConfig(iterations=3, children=2), tmp_path,
               progress=False)  # fmt: skip
    with pytest.raises(InputError, match="failed on every item it was given") as stop:
        s.run()
    assert "judge server down" in str(stop.value.__cause__)
    assert judge.calls == [2, 1, 1]  # the batch, then each item alone
    assert s.counts["judge_batch_failures"] == 1
    assert capsys.readouterr().err.count("RuntimeError: judge server down") == 1
    assert not list((tmp_path / "trees").glob("*.json"))  # nothing for a rerun to load


def test_a_judge_that_answered_once_is_flaky_and_the_search_goes_on(tmp_path):
    class Flaky(FakeJudge):
        name = "flaky"

        def __init__(self):
            self.calls = 0

        def __call__(self, items):
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("judge server down")
            return super().__call__(items)

    s = Search(rows(1), TwoWords(), Flaky(), MCTSConfig(iterations=3, children=2), tmp_path,
               progress=False)  # fmt: skip
    (tree,) = s.run()
    assert tree.stats["judge_error"] > 0 and s.counts["judge_batch_failures"] > 0


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, MemoryError])
def test_interrupts_and_memory_errors_from_the_judge_still_stop_the_search(tmp_path, error):
    class Stops(FakeJudge):
        def __call__(self, items):
            raise error()

    s = Search(rows(1), FakeGenerator(), Stops(), MCTSConfig(iterations=3), tmp_path,
               progress=False)  # fmt: skip
    with pytest.raises(error):
        s.run()


# ---------------------------------------------------------------------- 3. resume counts
def test_trees_searched_again_are_not_counted_as_resumed(tmp_path, capsys):
    config = MCTSConfig(iterations=8, children=3)

    def make(out):
        return Search(rows(4), FakeGenerator(), FakeJudge(), config, out, trees_per_batch=2,
                      progress=False)  # fmt: skip

    full = make(tmp_path / "full").run()
    part = tmp_path / "part"
    (part / "trees").mkdir(parents=True)
    shutil.copy(tmp_path / "full" / "search.json", part / "search.json")
    for i in (0, 1, 2):  # batch [0, 1] done; batch [2, 3] stopped after tree 2 was written
        shutil.copy(tree_file(tmp_path / "full", i), tree_file(part, i))
    s = make(part)
    again = s.run()
    assert [t.to_json() for t in again] == [t.to_json() for t in full]
    assert s.counts["trees_loaded"] == 2  # taken whole: trees 0 and 1
    assert s.counts["trees_researched"] == 1  # tree 2: its batch ran again
    summary = summarize(s, again, 1.0)
    assert (summary["trees_loaded"], summary["trees_researched"]) == (2, 1)
    assert "4 trees (2 resumed, 1 searched again)" in summary_line(summary)
    done = make(part)
    done.run()
    assert (done.counts["trees_loaded"], done.counts["trees_researched"]) == (4, 0)
    assert "4 trees (4 resumed)," in summary_line(summarize(done, full, 1.0))


def test_a_judge_returning_only_exceptions_stops_the_search_too(tmp_path):
    """The shipped judges (toy, vlm:, package.module:function) catch an item's error and return
    it as its verdict: a function that always raises is as broken as a batch that raises."""
    from mmalign.vlm.prism.judges import make_judge

    def broken(item):
        raise RuntimeError("no such key 'score'")

    s = Search(rows(2), TwoWords(), make_judge(broken), MCTSConfig(iterations=3, children=2),
               tmp_path, progress=False)  # fmt: skip
    with pytest.raises(InputError, match="no such key 'score'"):
        s.run()
    assert not list((tmp_path / "trees").glob("*.json"))
