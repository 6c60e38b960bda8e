"""PPD at inference and evaluation (Dang et al. CVPR 2025): users resolved from a run or from
their few-shot examples, mixes, per-user win rates with the user x conditioning matrix, and
clear errors for an unknown user, a wrong-width embedding and a malformed mix."""

from __future__ import annotations

import json

import pytest
import torch

from mmalign.config import InputError, load_config
from mmalign.diffusion import ppd
from mmalign.diffusion.ppd_recipe import PPDRecipe
from mmalign.diffusion.ppd_users import (
    UserPipeline,
    embedding_file,
    load_ppd,
    mix,
    parse_mix,
    user_embeddings,
    user_set,
)
from mmalign.eval.ppd_winrate import run_user_winrate, spearman, specificity
from mmalign.train import Config
from mmalign.train.loop import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ppd-run")
    overrides = [
        "data.toy.n=512", "data.toy.candidates=render", "train.max_steps=2",
        "train.batch_size=4", "train.learning_rate=0.05", "validation.enabled=false",
        "train.trackers=[]", f"output_dir={out}",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMALIGN_CACHE", str(tmp_path_factory.getbasetemp() / "mmalign-cache"))
        train(load_config(Config, "configs/toy/ppd.yaml", overrides), PPDRecipe)
    return out


def test_users_from_the_run_and_from_few_shot_examples(run) -> None:
    embs = user_embeddings(run, ["t03", "h01"])
    assert set(embs) == {"t03", "h01"}
    assert embs["t03"].shape == embs["h01"].shape == (ppd.adapter_meta(run)["embed_dim"],)
    assert not torch.equal(embs["t03"], embs["h01"])
    assert user_set("heldout") == [f"h0{k}" for k in range(8)]
    assert torch.equal(mix(embs["t03"], embs["h01"], 0.0), embs["t03"])
    assert torch.allclose(mix(embs["t03"], embs["h01"], 0.5), (embs["t03"] + embs["h01"]) / 2)


def test_bad_input_is_clear(run, tmp_path) -> None:
    with pytest.raises(InputError, match=r"unknown user 'h077'.*did you mean 'h07'"):
        user_embeddings(run, ["h077"])
    with pytest.raises(InputError, match="ID:WEIGHT"):
        parse_mix("h01:1.5")
    with pytest.raises(InputError, match="ID:WEIGHT"):
        parse_mix("h01")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(7)}, str(tmp_path / "user_embeddings.safetensors"))
    model, _ = load_ppd(run)
    with pytest.raises(InputError, match="width 7 but the PPD adapter takes"):
        UserPipeline(model.pipe, embedding_file(tmp_path / "user_embeddings.safetensors"))
    with pytest.raises(InputError, match="no user 'y'"):
        embedding_file(tmp_path, "y")
    # --mix with a file of another width: named, before any tensor arithmetic fails
    import argparse

    from mmalign.ppd_cli import sample_embedding

    args = argparse.Namespace(user_embedding=str(tmp_path / "user_embeddings.safetensors"),
                              user=None, ppd=str(run), mix="h01:0.5")  # fmt: skip
    with pytest.raises(InputError, match=r"--mix h01:0.5: .* shape \(7,\) and h01 one of"):
        sample_embedding(args)


def test_spearman() -> None:
    assert spearman([0, 1, 2, 3], [1, 5, 7, 9]) == pytest.approx(1.0)
    assert spearman([0, 1, 2, 3], [9, 5, 5, 1]) == pytest.approx(-4.5 / 22.5**0.5)  # a tie
    assert spearman([0, 1, 2], [3, 1, 2]) == pytest.approx(-0.5)


def test_specificity_tells_taste_from_a_quality_order() -> None:
    users = ["h00", "h01", "h02"]
    quality = {"h00": 0.0, "h01": 0.1, "h02": 0.2}  # h02's conditioning better for everyone
    generic = {a: {b: 0.5 + quality[b] for b in users} for a in users}
    s = specificity(generic)
    assert (s["hits"], s["pairs"], s["mutual"], s["unordered_pairs"]) == (3, 6, 0, 3)
    personal = {a: {b: 0.5 + 0.3 * (a == b) + quality[b] for b in users} for a in users}
    s = specificity(personal)
    assert (s["hits"], s["mutual"]) == (6, 3) and s["share"] == 1.0


def test_per_user_winrate_matrix_and_sweep(run, tmp_path) -> None:
    model, _ = load_ppd(run)
    from mmalign.diffusion.load import load_pipeline

    base = load_pipeline(model.source)
    embs = user_embeddings(run, ["h00", "h01", "t02"])
    from mmalign.ppd_cli import user_prompts

    prompts = user_prompts("toy:heldout:3")
    assert not any(w in p.split() for p in prompts for w in ("small", "large"))
    kw = dict(steps=2, guidance=2.5, batch_size=3, meta={"tuned": str(run), "base": "toy"})
    res = run_user_winrate(
        base.pipe, model.pipe, prompts, embs, tmp_path, interpolate=("h00", "h01"), **kw
    )
    assert set(res["users"]) == {"h00", "h01", "t02"}
    assert all(r["n"] == 3 and 0 <= r["win_rate"] <= 1 for r in res["users"].values())
    assert set(res["matrix"]) == {"h00", "h01", "t02"} and res["specificity"]["pairs"] == 6
    # conditioned on a user, the images differ from another user's: the branch is on
    own = res["matrix"]["h00"]
    assert own["h00"] != own["h01"]
    response = res["taste_response"]  # the samples' own taste axes under each conditioning
    axes = ["warmth", "size", "outline", "horizontal", "vertical"]
    assert response["axes"] == axes and len(response["base"]) == 5
    assert set(response["users"]) == {"h00", "h01", "t02"}
    assert response["users"]["h00"] != response["users"]["h01"]
    assert all(-1 <= v <= 1 or v != v for v in response["spearman"].values())
    sweep = res["interpolation"]
    assert sweep["weights"] == [0.0, 0.25, 0.5, 0.75, 1.0] and len(sweep["mean_b"]) == 5
    assert sweep["mean_a"][0] == pytest.approx(own["h00"])  # a = 0 is user A itself
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["average_win_rate"] == pytest.approx(res["average_win_rate"])
    page = (tmp_path / "report.html").read_text()
    assert "User x conditioning" in page and "Interpolation h00 -> h01" in page
    assert "Taste response" in page and f"{response['users']['h01'][1]:+.3f}" in page
    # a second run reuses every image
    again = run_user_winrate(base.pipe, model.pipe, prompts, embs, tmp_path, **kw)
    assert again["users"]["h00"] == res["users"]["h00"]
    # another branch weight draws the images again, and the report says which weight
    ppd.set_user_scale(model.pipe.unet, 4.0)
    strong = run_user_winrate(base.pipe, model.pipe, prompts, embs, tmp_path, **kw)
    assert json.loads((tmp_path / "images" / "settings.json").read_text())["user_scale"] == 4.0
    assert strong["user_scale"] == 4.0 and "user scale 4" in (tmp_path / "report.html").read_text()
    assert strong["matrix"]["h00"] != res["matrix"]["h00"]
    ppd.set_user_scale(model.pipe.unet, 1.0)
    # an interpolation end outside the evaluated users is swept, not averaged
    two = run_user_winrate(base.pipe, model.pipe, prompts, embs, tmp_path,
                           interpolate=("h00", "t02"), users=["h00", "h01"], **kw)  # fmt: skip
    assert set(two["users"]) == set(two["matrix"]) == {"h00", "h01"}
    assert two["average_win_rate"] == pytest.approx(
        (res["users"]["h00"]["win_rate"] + res["users"]["h01"]["win_rate"]) / 2
    )
    assert two["specificity"]["pairs"] == 2 and len(two["interpolation"]["mean_b"]) == 5
    assert two["interpolation"]["mean_b"][-1] == pytest.approx(res["matrix"]["t02"]["t02"])


def test_size_ceiling_probe(tmp_path, capsys) -> None:
    """benchmarks/ppd_size_ceiling.py: every user gets a best fixed size word whose win rate
    over the bare caption is at least a tie, and a second run reuses the images."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "ppd_size_ceiling.py"
    spec = importlib.util.spec_from_file_location("ppd_size_ceiling", path)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    args = ["--out", str(tmp_path), "--n", "3", "--steps", "2"]
    assert probe.main(args) == 0
    assert "size-large" in capsys.readouterr().err  # sampled
    result = json.loads((tmp_path / "ceiling.json").read_text())
    from mmalign.toy.rewards import HELDOUT_USERS, TRAIN_USERS

    assert result["prompts"] == 3 and len(result["users"]) == len(TRAIN_USERS + HELDOUT_USERS)
    for user in result["users"].values():
        assert user["best"] in ("medium", "small", "large")
        assert user["best_win_rate"] >= 0.5
        assert user["best_win_rate"] == (0.5 if user["best"] == "medium"
                                         else user["win_rate"][user["best"]])  # fmt: skip
    # specificity recounted from the reported means and choices, and no choice beats the best
    from mmalign.eval.ppd_winrate import tastes_differ
    from mmalign.toy.rewards import HELDOUT_USERS

    users, held = result["users"], list(HELDOUT_USERS)
    pairs = [(a, b) for a in held for b in held if a != b and tastes_differ(a, b)]
    hits = sum(users[a]["mean"][users[a]["best"]] > users[a]["mean"][users[b]["best"]]
               for a, b in pairs)  # fmt: skip
    spec = result["heldout_specificity"]
    assert (spec["hits"], spec["pairs"], spec["share"]) == (hits, len(pairs), hits / len(pairs))
    assert hits <= result["heldout_specificity_max_any_assignment"] <= len(pairs)
    files = sorted(p.name for p in tmp_path.rglob("*.png"))
    assert len(files) == 9
    assert probe.main(args) == 0
    assert "size-large" not in capsys.readouterr().err  # images reused, nothing sampled again


def test_taste_response_follows_the_samples() -> None:
    """Users given renders whose size rises with their size weight: size Spearman +1, and
    reversed -1; named users (no weights) give no response."""
    from dataclasses import replace

    from mmalign.eval.ppd_winrate import taste_response
    from mmalign.toy.render import render_batch
    from mmalign.toy.rewards import HELDOUT_USERS, user_weights
    from mmalign.toy.world import sample_prompts

    users = sorted(HELDOUT_USERS[:3], key=lambda u: user_weights(u)[1])
    prompts = sample_prompts(4, "heldout", 0)
    by_size = [render_batch([replace(p, size=s) for p in prompts])
               for s in ("small", "medium", "large")]  # fmt: skip
    up = taste_response(by_size[1], dict(zip(users, by_size, strict=True)))
    down = taste_response(by_size[1], dict(zip(users, by_size[::-1], strict=True)))
    assert up["spearman"]["size"] == pytest.approx(1.0)
    assert down["spearman"]["size"] == pytest.approx(-1.0)
    assert up["base"] == up["users"][users[1]]
    assert taste_response(by_size[1], {"big": by_size[0], "small": by_size[1],
                                       "warm": by_size[2]}) is None  # fmt: skip


def test_encoder_probe_runs_and_reads_the_examples(tmp_path) -> None:
    """benchmarks/ppd_encoder_probe.py: a table per setting, and the oracle row (the examples'
    own taste axes) predicts held-out users' weights better than chance."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "ppd_encoder_probe.py"
    spec = importlib.util.spec_from_file_location("ppd_encoder_probe", path)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    out = tmp_path / "probe.json"
    assert probe.main(["--users", "60", "--settings", "0:contrast", "--out", str(out)]) == 0
    table = json.loads(out.read_text())["table"]
    assert set(table) == {"oracle", "0:contrast"}
    assert all(-1 <= c <= 1 for row in table.values() for c in row)
    assert sum(table["oracle"]) / 3 > 0.3


def test_user_prompts_drop_size_and_place_but_named_users_keep_place() -> None:
    from mmalign.ppd_cli import user_prompts
    from mmalign.toy.world import parse_prompt

    family = [parse_prompt(p) for p in user_prompts("toy:heldout:40")]
    named = [parse_prompt(p) for p in user_prompts("toy:heldout:40", keep_position=True)]
    assert all((p.size, p.position) == ("medium", "center") for p in family)
    assert all(p.size == "medium" for p in named)
    assert any(p.position != "center" for p in named)
    assert [p.combination for p in family] == [p.combination for p in named]


def test_user_scale_weighs_the_branch(run, tmp_path, capsys) -> None:
    """`--user-scale 0` samples exactly the base model; other scales change the images; a
    negative scale is a clear error."""
    import numpy as np
    from PIL import Image

    from mmalign.cli import main
    from mmalign.grid import CELL

    common = ["sample", "toy:sd", "--prompt", "a red circle", "--steps", "2", "--n", "2"]

    def grid(name: str, *extra: str) -> np.ndarray:
        out = tmp_path / f"{name}.png"
        assert main([*common, *extra, "--out", str(out)]) == 0
        return np.asarray(Image.open(out))

    base = grid("base")
    user = ["--ppd", str(run), "--user", "h00"]
    off, on, strong = (
        grid("off", *user, "--user-scale", "0"),
        grid("on", *user),
        grid("strong", *user, "--user-scale", "4"),
    )
    # the header names the user (wrapped to as many lines as it needs); compare the two rows
    # of images (and their seed labels) under it
    rows = 2 * CELL
    assert np.array_equal(off[-rows:], base[-rows:])
    assert not np.array_equal(on[-rows:], base[-rows:])
    assert not np.array_equal(strong[-rows:], on[-rows:])
    assert main([*common, *user, "--user-scale", "-1", "--out", str(tmp_path / "x.png")]) == 2
    assert "--user-scale -1.0: expected a number >= 0" in capsys.readouterr().err


def test_ppd_options_without_ppd_are_refused(capsys) -> None:
    from mmalign.cli import main

    assert main(["sample", "toy:sd", "--prompt", "a red circle", "--user", "h00"]) == 2
    assert "--user only applies with --ppd" in capsys.readouterr().err
    args = ["eval", "winrate", "--tuned", "x", "--out", "y", "--interpolate", "h00:h01"]
    args += ["--user-scale", "2"]
    assert main(args) == 2
    assert "--interpolate, --user-scale only apply with --user" in capsys.readouterr().err


def test_sample_from_an_embedding_file_and_a_mix(run, tmp_path, capsys) -> None:
    """`sample --ppd RUN --user-embedding FILE [--user ID]` conditions on FILE's embedding (the
    run's own file gives exactly `--user ID`'s images); `--mix ID2:1` is ID2 itself, `--mix
    ID2:0` the user itself and `--mix ID2:0.5` neither."""
    import numpy as np
    from PIL import Image

    from mmalign.cli import main
    from mmalign.grid import CELL

    common = ["sample", "toy:sd", "--prompt", "a red circle", "--steps", "2", "--n", "2"]
    common += ["--ppd", str(run)]

    def grid(name: str, *extra: str) -> np.ndarray:
        out = tmp_path / f"{name}.png"
        assert main([*common, *extra, "--out", str(out)]) == 0
        # the two rows of images under the header, which names the user (in as many lines as
        # it needs)
        return np.asarray(Image.open(out))[-2 * CELL :]

    file = run / "user_embeddings.safetensors"
    assert file.is_file()
    t03, t05 = grid("t03", "--user", "t03"), grid("t05", "--user", "t05")
    assert not np.array_equal(t03, t05)
    assert np.array_equal(grid("file", "--user-embedding", str(file), "--user", "t03"), t03)
    assert np.array_equal(grid("mix1", "--user", "t03", "--mix", "t05:1"), t05)
    assert np.array_equal(grid("mix0", "--user", "t03", "--mix", "t05:0"), t03)
    half = grid("mix-half", "--user", "t03", "--mix", "t05:0.5")
    assert not np.array_equal(half, t03) and not np.array_equal(half, t05)
    capsys.readouterr()
    assert main([*common, "--user-embedding", str(tmp_path / "none.safetensors"),
                 "--out", str(tmp_path / "x.png")]) == 2  # fmt: skip
    assert "none.safetensors" in capsys.readouterr().err


def test_eval_winrate_users_through_the_cli(run, tmp_path, capsys) -> None:
    """`mmalign eval winrate --tuned RUN --user IDS --interpolate A:B` end to end: per-user
    rows over the prompts asked for, the matrix, the sweep, results.json and the report."""
    from mmalign.cli import main

    out = tmp_path / "eval"
    args = ["eval", "winrate", "--tuned", str(run), "--user", "t03,t05", "--n", "2",
            "--steps", "2", "--interpolate", "t03:t07", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["users"]) == {"t03", "t05"}
    for user, row in saved["users"].items():
        assert row["n"] == 2 and 0 <= row["win_rate"] <= 1
        assert f"{user}: win rate {row['win_rate']:.1%}" in printed
    average = (saved["users"]["t03"]["win_rate"] + saved["users"]["t05"]["win_rate"]) / 2
    assert saved["average_win_rate"] == pytest.approx(average)
    assert saved["specificity"]["pairs"] == 2 and set(saved["matrix"]) == {"t03", "t05"}
    assert saved["interpolation"]["a"] == "t03" and saved["interpolation"]["b"] == "t07"
    assert len(saved["interpolation"]["mean_b"]) == 5
    assert (out / "report.html").is_file() and "specificity: " in printed


def test_new_users_warn_when_the_run_used_another_prompt_format(run, monkeypatch) -> None:
    """The run records the encoder prompt format its users were embedded with; a new user
    embedded now with another one gets a warning naming both (the run's users and a new user's
    would differ for that reason alone)."""
    import warnings

    from mmalign.vlm.user_embed import PROMPT_FORMAT_VERSION

    meta = ppd.adapter_meta(run)
    assert meta["prompt_format"] == PROMPT_FORMAT_VERSION
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same format: no warning
        user_embeddings(run, ["h01"])
    old = {**meta, "prompt_format": None}  # a run saved before the format was versioned
    monkeypatch.setattr(ppd, "adapter_meta", lambda path: old)
    with pytest.warns(UserWarning, match=r"prompt format unrecorded .*h01 are embedded with"):
        user_embeddings(run, ["h01"])
