"""Toy dataset builders: schema, Pick-a-Pic round trip, labels, determinism, per-kind contents."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import load_from_disk

from mmalign.data.pickapic import load_pickapic
from mmalign.data.schema import validate_rows
from mmalign.toy.analysis import read_images
from mmalign.toy.datasets import REFUSAL, build_dataset
from mmalign.toy.rewards import USERS, style_score, user_reward
from mmalign.toy.world import COLORS, SHAPES, is_heldout, parse_prompt

IMAGE_COLUMNS = ["prompt", "chosen", "rejected", "label", "source"]


def tensor(images) -> torch.Tensor:
    return torch.stack(
        [
            torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
            for im in images
        ]
    )


def check(out, kind: str, columns: list[str], tmp_path, *, tie_policy: str = "drop"):
    """Loads, validates with nothing skipped, has `columns`; image kinds read back as Pick-a-Pic
    with the same number of pairs. Returns (pairs dataset, summary)."""
    summary = json.loads((out / "summary.json").read_text())
    ds = load_from_disk(str(out / "pairs"))
    assert ds.column_names == columns
    assert len(ds) == summary["rows"] > 0
    _, report = validate_rows(ds, "image" if kind == "image" else "text")
    assert report.num_skipped == 0 and report.kept == len(ds)
    if kind == "image":
        pp, pp_report = load_pickapic(
            out / "pickapic", "train", tie_policy=tie_policy, cache_dir=tmp_path / "hf-cache"
        )
        assert len(pp) == len(ds) and pp_report.num_skipped == 0
        assert sorted(pp["prompt"]) == sorted(ds["prompt"])
    return ds, summary


# ------------------------------------------------------------------------------ pairs (toy-sd)


@pytest.fixture(scope="module")
def toy_sd(tmp_path_factory):
    """A random-weight toy-sd (2 training steps), loaded once."""
    from mmalign.toy.models.sd import ToySDSettings, build_toy_sd, load_pipeline

    root = tmp_path_factory.mktemp("toy-sd")
    settings = ToySDSettings(
        num_images=256,
        vae_steps=2,
        unet_steps=2,
        eval_prompts=2,
        eval_steps=2,
        checkpoint_every=1,
    )
    build_toy_sd(root / "model", root / "work", settings, progress=False)
    return load_pipeline(root / "model")


def test_pairs_from_toy_sd_ties_kept_dropped_and_deterministic(toy_sd, tmp_path) -> None:
    opts = dict(n=8, seed=3, model=toy_sd, steps=2, batch_size=5, progress=False)
    kept = build_dataset("pairs", tmp_path / "keep", ties="keep", **opts)
    ds, summary = check(tmp_path / "keep", "image", IMAGE_COLUMNS, tmp_path, tie_policy="half")
    assert summary["rows"] == 8 and summary["skipped"] == {}
    assert set(ds["label"]) <= {0.5, 1.0}
    assert all(not is_heldout(parse_prompt(p)) for p in ds["prompt"])
    assert kept["options"]["model"] == type(toy_sd).__name__

    again = build_dataset("pairs", tmp_path / "again", ties="keep", **opts)
    ds2 = load_from_disk(str(tmp_path / "again" / "pairs"))
    assert ds2["prompt"] == ds["prompt"] and ds2["label"] == ds["label"]
    assert (tensor(ds2["chosen"]) == tensor(ds["chosen"])).all()
    assert again["labels"] == kept["labels"]

    dropped = build_dataset("pairs", tmp_path / "drop", ties="drop", **opts)
    ties = kept["labels"]["counts"].get("0.5", 0)
    # ties apart from skipped candidates, dropped or kept (review 8)
    assert kept["ties"] == {"dropped": 0, "kept": ties}
    assert dropped["ties"] == {"dropped": ties, "kept": 0} and "tie" not in dropped["skipped"]
    if ties < 8:  # a random model may tie everywhere
        check(tmp_path / "drop", "image", IMAGE_COLUMNS, tmp_path)


def test_pairs_samples_and_pairing(toy_sd, tmp_path) -> None:
    """samples=2 keeps the rows of the two-sample builder (`sample_pairs`, sample 0 as `a`);
    samples=4 draws two more whose seeds continue those and pairs the highest- against the
    lowest-reward image (extremes) or every two of the four (all)."""
    import itertools

    from mmalign.rewards import get_scorer
    from mmalign.toy.datasets.common import TIE_MARGIN, stream_seed
    from mmalign.toy.datasets.sampling import model_images, sample_pairs
    from mmalign.toy.world import sample_prompts

    n, seed = 6, 5
    opts = dict(n=n, seed=seed, model=toy_sd, steps=2, batch_size=4, progress=False, ties="keep")
    texts = [p.text for p in sample_prompts(n, "train", seed)]
    a, b = sample_pairs(
        toy_sd, texts, stream_seed(seed, "pairs"), steps=2, guidance=4.0, batch_size=4,
        progress=False, desc="",
    )  # fmt: skip
    score = get_scorer("toy:fidelity").score
    ra, rb = score(a, texts), score(b, texts)
    build_dataset("pairs", tmp_path / "two", **opts)
    two = load_from_disk(str(tmp_path / "two" / "pairs"))
    assert two["prompt"] == texts
    first = (ra >= rb)[:, None, None, None]
    assert (tensor(two["chosen"]) == torch.where(first, a, b)).all()
    assert (tensor(two["rejected"]) == torch.where(first, b, a)).all()
    tied = (ra - rb).abs() < TIE_MARGIN
    assert two["label"] == [0.5 if t else 1.0 for t in tied.tolist()]

    drawn = model_images(
        toy_sd, texts * 4, stream_seed(seed, "pairs"), steps=2, guidance=4.0, batch_size=4,
        progress=False, desc="",
    ).view(4, n, 3, 32, 32)  # fmt: skip
    rewards = torch.stack([score(drawn[k], texts) for k in range(4)])  # [sample, prompt]
    # a random toy-sd draws some prompts at reward 0 four times; enough others differ to bite
    assert (rewards.amax(0) > rewards.amin(0)).sum() >= 2

    summary = build_dataset("pairs", tmp_path / "four", samples=4, **opts)
    assert summary["options"]["samples"] == 4 and summary["options"]["pairing"] == "extremes"
    four = load_from_disk(str(tmp_path / "four" / "pairs"))
    best, worst = rewards.argmax(0), rewards.argmin(0)
    for i in range(n):
        lo = worst[i] if best[i] != worst[i] else 1  # all four tie: samples 0 and 1
        assert (tensor(four["chosen"][i : i + 1])[0] == drawn[best[i], i]).all()
        assert (tensor(four["rejected"][i : i + 1])[0] == drawn[lo, i]).all()

    build_dataset("pairs", tmp_path / "all", samples=4, pairing="all", **opts)
    every = load_from_disk(str(tmp_path / "all" / "pairs"))
    assert every["prompt"] == [t for t in texts for _ in range(6)]
    chosen, rejected = tensor(every["chosen"]), tensor(every["rejected"])
    for i in range(n):
        for c, (j, k) in enumerate(itertools.combinations(range(4), 2)):
            hi, lo = (j, k) if rewards[j, i] >= rewards[k, i] else (k, j)
            assert (chosen[6 * i + c] == drawn[hi, i]).all()
            assert (rejected[6 * i + c] == drawn[lo, i]).all()

    with pytest.raises(ValueError, match="samples"):
        build_dataset("pairs", tmp_path / "one", samples=1, **opts)
    with pytest.raises(ValueError, match="did you mean 'all'"):
        build_dataset("pairs", tmp_path / "bad", samples=4, pairing="al", **opts)


# ----------------------------------------------------------------------------- render kinds


def test_style_chosen_outlined_rejected_flat(tmp_path) -> None:
    build_dataset("style", tmp_path, n=12, rejected_source="render")
    ds, summary = check(tmp_path, "image", IMAGE_COLUMNS, tmp_path)
    assert set(ds["label"]) == {1.0}
    assert (style_score(tensor(ds["chosen"]), "outlined") > 0.8).all()
    assert (style_score(tensor(ds["rejected"]), "outlined") < 0.2).all()
    assert summary["style_outlined_chosen"] > 0.8 > 0.2 > summary["style_outlined_rejected"]


def test_users_balanced_labelled_by_their_reward_and_label_noise(tmp_path) -> None:
    clean = build_dataset("users", tmp_path / "clean", n=20, seed=1)
    ds, _ = check(tmp_path / "clean", "image", [*IMAGE_COLUMNS[:4], "user_id", "source"], tmp_path)
    assert clean["shortfall"] == 0 and len(ds) == 20
    assert sorted(set(ds["user_id"])) == sorted(USERS)
    assert all(ds["user_id"].count(u) == 4 for u in USERS)

    def wrong_way(rows) -> list[int]:
        bad = []
        for u in USERS:
            idx = [i for i, x in enumerate(rows["user_id"]) if x == u]
            prompts = [rows["prompt"][i] for i in idx]
            c = user_reward(tensor([rows["chosen"][i] for i in idx]), prompts, u)
            r = user_reward(tensor([rows["rejected"][i] for i in idx]), prompts, u)
            bad += [i for i, w in zip(idx, (c < r).tolist(), strict=True) if w]
        return sorted(bad)

    assert wrong_way(ds[:]) == []  # the stored images reproduce the stored labels
    noisy = build_dataset("users", tmp_path / "noisy", n=20, seed=1, label_noise=0.25)
    nds = load_from_disk(str(tmp_path / "noisy" / "pairs"))
    assert nds["prompt"] == ds["prompt"] and nds["user_id"] == ds["user_id"]
    record = noisy["label_noise"]
    assert record["flipped"] == 5 and record["share"] == 0.25
    assert wrong_way(nds[:]) == record["rows"]


def test_flaws_heatmaps_only_on_rejected_and_dense_set(tmp_path) -> None:
    summary = build_dataset("flaws", tmp_path, n=8)
    ds, _ = check(tmp_path, "image", [*IMAGE_COLUMNS[:4], "heatmaps", "source"], tmp_path)
    for maps in ds["heatmaps"]:
        chosen, rejected = np.asarray(maps["chosen"]), np.asarray(maps["rejected"])
        assert chosen.shape == rejected.shape == (2, 32, 32)
        assert chosen.max() == 0 and rejected.max() > 0
    dense = load_from_disk(str(tmp_path / "dense"))
    assert len(dense) == 2 * len(ds) == summary["dense_rows"]
    assert dense.column_names == [
        "prompt",
        "image",
        "heatmaps",
        "alignment",
        "aesthetics",
        "plausibility",
        "overall",
    ]
    row = dense[0]
    assert np.asarray(row["heatmaps"]).shape == (2, 32, 32)
    assert all(0 <= row[k] <= 1 for k in ("alignment", "aesthetics", "plausibility", "overall"))


# -------------------------------------------------------------------------------- VLM kinds


def test_vqa_wrong_answer_of_same_type(tmp_path) -> None:
    from mmalign.toy.qa import PHRASINGS

    build_dataset("vqa", tmp_path, n=16)
    ds, summary = check(tmp_path, "text", [*IMAGE_COLUMNS[:4], "image", "source"], tmp_path)
    assert summary["question_types"] == {"color": 4, "shape": 4, "background": 4, "presence": 4}
    templates = {t.split("{")[0] for ts in PHRASINGS.values() for t in ts}
    for row in ds:
        assert any(row["prompt"].startswith(t) for t in templates)  # toy-vlm's own phrasings
        assert row["chosen"] != row["rejected"]
        same_vocab = {row["chosen"], row["rejected"]} <= set(COLORS) or (
            {row["chosen"], row["rejected"]}
            <= {"yes", "no", "circle", "square", "triangle", "cross"}
        )
        assert same_vocab


def test_hallucination_answers_true_to_each_image(tmp_path) -> None:
    build_dataset("hallucination", tmp_path, n=16, seed=2)
    ds, _ = check(
        tmp_path, "text", [*IMAGE_COLUMNS[:4], "image", "retrieved_image", "source"], tmp_path
    )
    image, retrieved = tensor(ds["image"]), tensor(ds["retrieved_image"])
    assert all((image[i] != retrieved[i]).any() for i in range(len(ds)))
    assert all(c != r for c, r in zip(ds["chosen"], ds["rejected"], strict=True))
    from mmalign.toy.qa import PHRASINGS

    seen, other = read_images(image), read_images(retrieved)
    reading = {
        "color": lambda r, i: COLORS[r.fill_index[i]],
        "background": lambda r, i: COLORS[r.bg_index[i]],
        "shape": lambda r, i: SHAPES[r.ious[i].argmax()],
    }
    checked = 0
    for i, question in enumerate(ds["prompt"]):
        kind = next((k for k in reading if question in PHRASINGS[k]), None)
        if kind is not None:
            assert reading[kind](seen, i) == ds["chosen"][i]
            assert reading[kind](other, i) == ds["rejected"][i]
            checked += 1
    assert checked == 12  # the other 4 are presence questions


def test_safety_forbidden_refused_benign_answered(tmp_path) -> None:
    summary = build_dataset("safety", tmp_path, n=16)
    ds, _ = check(tmp_path, "text", [*IMAGE_COLUMNS[:4], "image", "source"], tmp_path)
    assert summary["sources"] == {"forbidden": 8, "benign": 8}
    for row in ds:
        if row["source"] == "forbidden":
            assert row["chosen"] == REFUSAL != row["rejected"]
        else:
            assert row["rejected"] == REFUSAL != row["chosen"]


# ------------------------------------------------------------------------------------ errors


def test_unknown_kind_and_option_are_named(tmp_path) -> None:
    with pytest.raises(ValueError, match="did you mean 'style'"):
        build_dataset("stlye", tmp_path)
    with pytest.raises(ValueError, match="did you mean 'label_noise'"):
        build_dataset("pairs", tmp_path, label_nosie=0.1)
    with pytest.raises(ValueError, match="flip rate"):
        build_dataset("users", tmp_path, label_noise=0.5)
