"""PRISM's step-level search (Li et al. 2025, section 3.2): UCB bookkeeping, the pair rules,
shared prefixes, resuming, and bad input (unclosed stages, failing or out-of-range judges)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mmalign.data.prism_cot import STAGES, close_tag, open_tag, parse_stages
from mmalign.vlm.prism.generate import StageSample
from mmalign.vlm.prism.judges import JudgeItem, ToyJudge, check_verdict, make_judge
from mmalign.vlm.prism.mcts import MCTSConfig, Tree
from mmalign.vlm.prism.search import Search, pair_rows, pairs_dataset, summarize, tree_file

WORDS = ("good", "bad", "meh", "odd", "fine")


class FakeGenerator:
    """Samples drawn from torch's global stream (as sampling a model would be), sometimes cut
    before the closing tag; `fail_after` simulates a crash after that many calls."""

    def __init__(self, fail_after: int | None = None, **sampling):
        self.calls, self.fail_after = 0, fail_after
        # what a StageGenerator's samples depend on, read into the saved search settings
        self.temperature = sampling.get("temperature", 1.0)
        self.max_new_tokens = sampling.get("max_new_tokens", 8)
        self.batch_size = sampling.get("batch_size", 12)

    def __call__(self, requests, samples):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        out = []
        for r in requests:
            got = []
            for _ in range(samples):
                word = WORDS[int(torch.randint(len(WORDS), (1,)))]
                closed = bool(torch.rand(()) > 0.1)
                text = open_tag(r.stage) + word + (close_tag(r.stage) if closed else "")
                got.append(StageSample(text, closed, 3))
            out.append(got)
        return out


class FakeJudge:
    """good 1, fine 0.9, meh 0, bad -1; odd raises; 'fine' at OUTPUT is out of range."""

    name = "fake"

    def __call__(self, items):
        out = []
        for it in items:
            word = parse_stages(it.text).stages[it.stage]
            if word == "odd":
                out.append(ValueError("cannot judge"))
            elif word == "fine" and it.stage == "OUTPUT":
                out.append(7.0)
            else:
                out.append({"good": 1.0, "fine": 0.9, "meh": 0.0, "bad": -1.0}[word])
        return out


def rows(n: int, word: str = "request") -> list[dict]:
    return [{"prompt": f"{word} {i}", "chosen": "x", "rejected": "y"} for i in range(n)]


def search(tmp, n=6, config=None, **kw) -> Search:
    config = config or MCTSConfig(iterations=30, children=3)
    return Search(kw.pop("rows", None) or rows(n), kw.pop("generate", FakeGenerator()),
                  FakeJudge(), config, tmp, trees_per_batch=kw.pop("trees_per_batch", 4),
                  progress=False, **kw)  # fmt: skip


def test_pairs_follow_the_margin_and_value_rules_and_share_the_parent_prefix(tmp_path):
    trees = search(tmp_path).run()
    pairs = [(t, p) for t in trees for p in t.pairs()]
    assert pairs, "the fake search should give pairs"
    for tree, p in pairs:
        c, r = tree.nodes[p.chosen], tree.nodes[p.rejected]
        assert c.parent == r.parent == p.parent
        assert c.value - r.value > 0.4 and c.value >= 0.8
        parent = tree.prefix(p.parent)
        assert p.chosen_text == parent + c.text and p.rejected_text == parent + r.text
        assert p.chosen_text != p.rejected_text
    # and every sibling pair meeting the rules was emitted
    for tree in trees:
        want = sum(1 for n in tree.nodes for a in n.children for b in n.children
                   if tree.nodes[a].value - tree.nodes[b].value > 0.4
                   and tree.nodes[a].value >= 0.8)  # fmt: skip
        assert want == len(tree.pairs())
    out = pair_rows(rows(6), trees)
    assert len(out) == len(pairs) and all(r["source"].startswith("prism-mcts:") for r in out)


def test_visits_and_values_are_backed_up(tmp_path):
    tree = search(tmp_path, n=1).run()[0]
    root = tree.nodes[0]
    assert root.visits == sum(tree.nodes[c].visits for c in root.children)
    for node in tree.nodes[1:]:
        own = 1 + sum(tree.nodes[c].visits for c in node.children)
        assert node.visits >= own  # terminal revisits add more
        assert -1.0 <= node.value <= 1.0
        assert node.stage == STAGES[node.depth - 1]
        if node.stage == "OUTPUT" or node.failed:
            assert node.terminal and not node.children
    assert tree.iterations == 30


def test_ucb_picks_the_unexplored_branch():
    tree = Tree(0, MCTSConfig(iterations=10, children=2, c=1.5))
    leaf = tree.step()
    tree.expand(leaf, [("<|PROBLEM|>a<|/PROBLEM|>", True), ("<|PROBLEM|>b<|/PROBLEM|>", True)],
                [1.0, -1.0])  # fmt: skip
    a = tree.nodes[1]
    tree.expand(a.id, [("<|CAPTION|>c<|/CAPTION|>", True)], [1.0])
    # a: visits 2, value 1; b: visits 1, value -1; root visits 3
    ucb_a = 1.0 + 1.5 * math.sqrt(math.log(3) / 2)
    ucb_b = -1.0 + 1.5 * math.sqrt(math.log(3) / 1)
    assert (tree.step() == 3) == (ucb_a > ucb_b)


def test_bad_samples_and_judges_are_counted_never_fatal(tmp_path):
    s = search(tmp_path, n=8)
    trees = s.run()
    keys = ("unclosed", "judge_error", "judge_out_of_range", "skipped")
    stats = {k: sum(t.stats[k] for t in trees) for k in keys}
    assert stats["unclosed"] > 0 and stats["judge_error"] > 0 and stats["judge_out_of_range"] > 0
    assert stats["skipped"] == stats["judge_error"] + stats["judge_out_of_range"]
    for node in (n for t in trees for n in t.nodes[1:]):  # judge failures left no node
        if "odd" in node.text or ("fine" in node.text and node.stage == "OUTPUT"):
            assert node.failed == "unclosed"
    failed = [n for t in trees for n in t.nodes if n.failed == "unclosed"]
    assert failed and all(n.score == -1.0 and n.terminal for n in failed)


def test_a_resumed_search_gives_the_same_trees(tmp_path):
    full = search(tmp_path / "full", n=10).run()
    crash = search(tmp_path / "part", n=10, generate=FakeGenerator(fail_after=9))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crash.run()
    saved = sorted((tmp_path / "part" / "trees").glob("tree-*.json"))
    assert 0 < len(saved) < 10  # finished trees are on disk after the crash
    before = {p.name: p.read_text() for p in saved}
    resumed = search(tmp_path / "part", n=10)
    again = resumed.run()
    # a saved tree whose batch runs again is searched again (test_review5_prism_search)
    assert resumed.counts["trees_loaded"] + resumed.counts["trees_researched"] == len(saved)
    assert [t.to_json() for t in again] == [t.to_json() for t in full]
    for name, text in before.items():  # loaded, not redone
        assert (tmp_path / "part" / "trees" / name).read_text() == text
    assert json.loads(tree_file(tmp_path / "part", 9).read_text()) == full[9].to_json()


def test_other_settings_in_the_same_folder_are_refused(tmp_path):
    from mmalign.config import InputError

    search(tmp_path, n=2).run()
    with pytest.raises(InputError, match="other settings"):
        search(tmp_path, n=2, config=MCTSConfig(iterations=5)).run()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"model": ("other", None, [["model.safetensors", 9, 2]])}, "model (other weights)"),
        ({"rows": rows(2, word="other")}, "data (other rows)"),
        ({"generate": FakeGenerator(temperature=0.7)}, "temperature 1.0 -> 0.7"),
        ({"generate": FakeGenerator(max_new_tokens=16)}, "max_new_tokens 8 -> 16"),
        ({"generate": FakeGenerator(batch_size=6)}, "batch_size 12 -> 6"),
        ({"config": MCTSConfig(iterations=5)}, "config (iterations 30 -> 5)"),
    ],
)
def test_a_resume_with_other_model_data_or_sampling_is_refused(tmp_path, change, named):
    """Trees depend on the weights, the rows and the sampling as much as on the search config:
    a rerun into the same --out that differs in any is refused (naming it), not resumed."""
    from mmalign.config import InputError

    model = ("toy", None, [["model.safetensors", 8, 1]])
    search(tmp_path, n=2, model=model).run()
    saved = json.loads((tmp_path / "search.json").read_text())
    assert {"model", "data", "temperature", "max_new_tokens", "batch_size"} <= set(saved)
    same = search(tmp_path, n=2, model=model)
    same.run()  # the same settings resume: every tree loaded
    assert same.counts["trees_loaded"] == 2 and same.counts["samples"] == 0
    kw = {"model": model, **change}
    with pytest.raises(InputError, match="new --out") as err:
        search(tmp_path, n=2, **kw).run()
    assert named in str(err.value)


def test_a_search_saved_without_the_new_settings_is_not_resumed(tmp_path):
    """A search.json from before model, data and sampling were recorded cannot show that they
    match: refused, naming what it lacks."""
    from mmalign.config import InputError

    search(tmp_path, n=2).run()
    path = tmp_path / "search.json"
    old = json.loads(path.read_text())
    for key in ("model", "data", "temperature", "max_new_tokens", "batch_size"):
        del old[key]
    path.write_text(json.dumps(old))
    with pytest.raises(InputError, match=r"data \(not recorded in search.json"):
        search(tmp_path, n=2).run()


def test_an_unclosed_repeat_counts_as_unclosed_not_as_a_duplicate():
    tree = Tree(0, MCTSConfig(iterations=10, children=4))
    leaf = tree.step()
    cut, done = "<|PROBLEM|>a", "<|PROBLEM|>b<|/PROBLEM|>"
    made = tree.expand(leaf, [(cut, False), (cut, False), (done, True), (done, True)],
                       [None, None, 1.0, 1.0])  # fmt: skip
    assert len(made) == 2  # one node per text
    assert tree.stats["unclosed"] == 2 and tree.stats["duplicates"] == 1
    assert tree.stats["nodes"] == 2
    again = tree.expand(made[1], [(cut, False)], [None])  # a new parent: no repeat
    assert len(again) == 1 and tree.stats["unclosed"] == 3


def test_this_run_counts_nodes_added_apart_from_samples(tmp_path):
    """nodes_per_second counts samples that became nodes (duplicates and unclosed repeats,
    judge failures excluded); samples_per_second every sample drawn."""
    s = search(tmp_path / "a", n=4)
    trees = s.run()
    this = summarize(s, trees, 2.0)["this_run"]
    added = sum(t.stats["nodes"] for t in trees)
    assert this["nodes"] == added == sum(len(t.nodes) - 1 for t in trees)
    dropped = sum(t.stats[k] for t in trees for k in ("duplicates", "skipped"))
    assert dropped > 0 and this["samples"] > added
    assert this["nodes_per_second"] == round(added / 2.0, 2)
    assert this["samples_per_second"] == round(this["samples"] / 2.0, 2)
    resumed = search(tmp_path / "a", n=4)
    again = summarize(resumed, resumed.run(), 1.0)["this_run"]
    assert again["nodes"] == 0 and again["nodes_per_second"] == 0.0


def test_pairs_keep_every_image_of_a_multi_image_row(tmp_path):
    """A row with an `images` list (the search shows them all, `row_images`) gives pairs with
    that list, saved as a dataset that training reads back with both images."""
    from PIL import Image

    from mmalign.vlm.collate import row_images
    from mmalign.vlm.data import open_vlm_pairs

    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    data = [{**r, "images": [red, blue]} for r in rows(3)]
    trees = search(tmp_path / "s", rows=data).run()
    out = pair_rows(data, trees)
    assert out and all(len(r["images"]) == 2 and "image" not in r for r in out)
    ds, report = pairs_dataset(out)
    assert report.kept == len(out) == len(ds) and "images" in ds.column_names
    ds.save_to_disk(str(tmp_path / "pairs"))
    back, _ = open_vlm_pairs(tmp_path / "pairs")
    assert len(back) == len(out)
    assert [im.getpixel((0, 0)) for im in row_images(back[0])] == [(255, 0, 0), (0, 0, 255)]
    single = pair_rows([{**r, "image": red} for r in rows(3)], trees)
    assert all(r["image"] is red and "images" not in r for r in single)
    assert pairs_dataset(single)[0].column_names.count("image") == 1


def test_batched_and_single_tree_searches_see_the_same_rules(tmp_path):
    one = search(tmp_path / "one", n=3, trees_per_batch=1).run()
    assert all(t.iterations == 30 for t in one)


# --------------------------------------------------------------------------------- judges


def _item(source: str, text: str, stage: str) -> JudgeItem:
    ref = ("<|PROBLEM|>p<|/PROBLEM|><|CAPTION|>red circle<|/CAPTION|><|REASONING|>r"
           "<|/REASONING|><|OUTPUT|>red<|/OUTPUT|>")  # fmt: skip
    return JudgeItem({"prompt": "q", "chosen": ref, "source": source}, text, stage)


def test_toy_judge():
    judge = ToyJudge()
    cap = "<|PROBLEM|>p<|/PROBLEM|><|CAPTION|>red circle<|/CAPTION|>"
    assert judge([_item("benign:qa:plain", cap, "CAPTION")]) == [1.0]
    wrong = "<|PROBLEM|>p<|/PROBLEM|><|CAPTION|>blue circle<|/CAPTION|>"
    assert judge([_item("benign:qa:plain", wrong, "CAPTION")]) == [-1.0]
    out = "<|OUTPUT|>I cannot help with that request.<|/OUTPUT|>"
    assert judge([_item("forbidden:text:plain", out, "OUTPUT")]) == [1.0]
    assert judge([_item("benign:qa:plain", out, "OUTPUT")]) == [-1.0]
    assert judge([_item("benign:qa:plain", "<|OUTPUT|>red<|/OUTPUT|>", "OUTPUT")]) == [1.0]
    assert judge([_item("benign:qa:plain", "<|OUTPUT|>blue<|/OUTPUT|>", "OUTPUT")]) == [-0.5]
    assert judge([_item("forbidden:text:plain", "<|OUTPUT|>ok<|/OUTPUT|>", "OUTPUT")]) == [-1.0]
    bad = judge([JudgeItem({"prompt": "q", "chosen": "plain", "source": None}, out, "OUTPUT")])
    assert isinstance(bad[0], ValueError)


def test_judge_specs_and_verdicts():
    assert check_verdict(0.5) == (0.5, None)
    assert check_verdict(1.5) == (None, "judge_out_of_range")
    assert check_verdict(float("nan")) == (None, "judge_out_of_range")
    assert check_verdict(RuntimeError()) == (None, "judge_error")
    assert make_judge("toy").name == "toy"
    j = make_judge("math:cos")  # any importable callable
    assert j([_item("benign:qa:plain", "", "OUTPUT")])[0].__class__ is TypeError
    assert make_judge(lambda item: 0.25)([_item("x", "", "OUTPUT")]) == [0.25]
    with pytest.raises(ValueError, match="unknown judge"):
        make_judge("nonsense")
    with pytest.raises(ValueError, match="cannot import"):
        make_judge("no_such_module_xyz:f")


def test_cli_searches_toy_vlm_and_resumes(tmp_path, capsys):
    """`mmalign data prism-mcts` end to end on toy-vlm with the tags added (untrained, so most
    stages never close: failures are counted), then a rerun that loads every tree."""
    from mmalign.cli import main
    from mmalign.vlm.load import load_vlm
    from mmalign.vlm.prism.format import add_stage_tokens

    vlm = load_vlm("toy:vlm")
    add_stage_tokens(vlm.model, vlm.processor)
    vlm.model.save_pretrained(tmp_path / "model")
    vlm.processor.save_pretrained(tmp_path / "model")
    args = ["data", "prism-mcts", "--model", str(tmp_path / "model"), "--data", "toy:prism",
            "--judge", "toy", "--out", str(tmp_path / "out"), "--max-samples", "3",
            "--iterations", "4", "--max-new-tokens", "8", "--trees-per-batch", "2"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["trees"] == 3 and len(summary["per_tree"]) == 3
    assert summary["this_run"]["samples"] > 0
    assert summary["this_run"]["samples"] >= summary["this_run"]["nodes"] == summary["nodes"]
    assert "samples_per_second" in summary["this_run"]
    assert summary["failures"]["unclosed"] + summary["nodes"] > 0
    assert (tmp_path / "out" / "pairs" / "dataset_info.json").is_file()
    assert main(args) == 0
    again = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert again["trees_loaded"] == 3 and again["this_run"]["samples"] == 0
    # without --trees-per-batch a rerun keeps the search's own batching and resumes
    assert main(args[:-2]) == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["trees_loaded"] == 3
    assert main([*args[:-6], "--iterations", "5", *args[-4:]]) == 2  # other settings: refused
    capsys.readouterr()
    assert main([*args, "--temperature", "0.5"]) == 2  # other sampling: refused, named
    assert "temperature 1.0 -> 0.5" in capsys.readouterr().err
    # the weights' identity (VLM.weights_key: dtype, folder, revision, weight files), not
    # only the --model string
    model = json.loads((tmp_path / "out" / "search.json").read_text())["model"]
    assert model[:2] == ["float32", str(tmp_path / "model")] and model[3]

    # fewer rows than --max-samples asks for: searched, and said so
    assert main(["toy", "data", "prism", "--n", "2", "--out", str(tmp_path / "two")]) == 0
    capsys.readouterr()
    assert main([*args[:4], "--data", str(tmp_path / "two" / "pairs"), "--judge", "toy",
                 "--out", str(tmp_path / "out2"), "--max-samples", "5", "--iterations", "1",
                 "--max-new-tokens", "4"]) == 0  # fmt: skip
    assert "--max-samples 5, but" in capsys.readouterr().err
    assert json.loads((tmp_path / "out2" / "summary.json").read_text())["trees"] == 2

    # the throughput benchmark (batching off vs on, one run) on the same model
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "prism_mcts.py"
    spec = importlib.util.spec_from_file_location("prism_mcts_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--model", str(tmp_path / "model"), "--trees", "2", "--iterations", "2",
                       "--max-new-tokens", "6", "--json", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    off, on = result["results"]
    assert (off["mode"], on["mode"]) == ("unbatched", "batched") and off["trees"] == on["trees"]
    assert off["generate_calls"] >= on["generate_calls"] > 0 and result["speedup"] > 0
    import torch

    assert torch.is_grad_enabled()  # the benchmark ran in-process and must leave autograd on
