"""The toy likelihood-displacement set (Razin et al.): `toy:safety` with `near_synonyms`, where
a share of the forbidden rows reject a near-synonym refusal instead of the compliance. Checks:
the counts, determinism, every other row unchanged, bad shares refused, and that toy-vlm's
LN-CHES ranks exactly the near-synonym pairs highest (what the filter experiment relies on)."""

from __future__ import annotations

import pytest
from datasets import load_from_disk

from mmalign.toy.datasets import NEAR_SYNONYM_REFUSALS, REFUSAL, build_dataset


def rows(tmp_path, name: str, **options) -> list[dict]:
    summary = build_dataset("safety", tmp_path / name, n=48, seed=3, **options)
    data = load_from_disk(str(tmp_path / name / "pairs"))
    got = [{k: data[i][k] for k in ("prompt", "chosen", "rejected", "source")}
           for i in range(len(data))]  # fmt: skip
    return summary, got


def test_near_synonyms_replace_that_share_of_forbidden_rejections(tmp_path):
    summary, mixed = rows(tmp_path, "mixed", near_synonyms=0.5)
    _, plain = rows(tmp_path, "plain")
    _, again = rows(tmp_path, "again", near_synonyms=0.5)
    assert summary["sources"] == {"forbidden": 12, "synonym": 12, "benign": 24}
    assert mixed == again  # a function of the seed
    assert len(mixed) == len(plain)
    for m, p in zip(mixed, plain, strict=True):
        assert (m["prompt"], m["chosen"]) == (p["prompt"], p["chosen"])
        if m["source"] == "synonym":
            assert p["source"] == "forbidden" and m["chosen"] == REFUSAL
            assert m["rejected"] in NEAR_SYNONYM_REFUSALS and m["rejected"] != p["rejected"]
        else:
            assert m == p  # every other row (and draw) is the plain build's
    assert len({m["rejected"] for m in mixed if m["source"] == "synonym"}) > 1


def test_offtopic_rejections_keep_the_compliance_out(tmp_path):
    summary, mixed = rows(tmp_path, "off", near_synonyms=0.5, offtopic=True)
    _, plain = rows(tmp_path, "plain")
    _, synonyms = rows(tmp_path, "syn", near_synonyms=0.5)
    assert summary["sources"] == {"offtopic": 12, "synonym": 12, "benign": 24}
    compliances = {p["rejected"] for p in plain if p["source"] == "forbidden"}
    for m, p, y in zip(mixed, plain, synonyms, strict=True):
        assert m["prompt"] == p["prompt"] and m["rejected"] not in compliances
        if m["source"] == "offtopic":
            assert m["chosen"] == REFUSAL and len(m["rejected"].split()) == 1
        else:
            assert m == y  # the synonym and benign rows are those without offtopic


def test_synonym_side_chosen_swaps_the_pair(tmp_path):
    _, rejected = rows(tmp_path, "rej", near_synonyms=0.5)
    _, chosen = rows(tmp_path, "cho", near_synonyms=0.5, synonym_side="chosen")
    for r, c in zip(rejected, chosen, strict=True):
        if r["source"] == "synonym":
            assert (c["chosen"], c["rejected"]) == (r["rejected"], r["chosen"])
        else:
            assert c == r
    with pytest.raises(ValueError, match="synonym_side"):
        build_dataset("safety", tmp_path / "bad", n=8, near_synonyms=0.5, synonym_side="both")


def test_near_synonyms_bounds(tmp_path):
    summary, _ = rows(tmp_path, "all", near_synonyms=1.0)
    assert summary["sources"] == {"synonym": 24, "benign": 24}
    with pytest.raises(ValueError, match=r"near_synonyms .* \[0, 1\], got 1.5"):
        build_dataset("safety", tmp_path / "bad", n=8, near_synonyms=1.5)


def test_ln_ches_ranks_the_near_synonym_pairs_highest(tmp_path):
    from mmalign.vlm.diagnose import diagnose_rows
    from mmalign.vlm.load import load_vlm

    build_dataset("safety", tmp_path / "mixed", n=48, seed=3, near_synonyms=0.5)
    build_dataset("safety", tmp_path / "off", n=48, seed=3, near_synonyms=0.5, offtopic=True)
    build_dataset("safety", tmp_path / "swap", n=48, seed=3, near_synonyms=0.5, offtopic=True,
                  synonym_side="chosen")  # fmt: skip
    vlm = load_vlm("toy:vlm")
    for name in ("mixed", "off", "swap"):
        data = load_from_disk(str(tmp_path / name / "pairs"))
        diag = diagnose_rows(vlm.model, vlm.processor, data, progress=False)
        sources = [data[i]["source"] for i in diag.columns["row"]]
        scores = diag.columns["ln_ches"]
        synonym = [s for s, src in zip(scores, sources, strict=True) if src == "synonym"]
        other = [s for s, src in zip(scores, sources, strict=True) if src != "synonym"]
        assert min(synonym) > max(other)  # keep_lowest=0.75 drops exactly the synonym rows
