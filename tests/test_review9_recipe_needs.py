"""`mmalign train` names every model a recipe loads before anything loads (mmalign/train/
sources.py): offline, the reward scorer of SmPO's soft labels (`data.smooth`: PickScore's model
and its processor, a different repository), PPD's user encoder (`ppd.encoder`) and the dense
head of `diffusion.dense.scorer: dense:<path>` were not checked, so a SmPO run read and
filtered Pick-a-Pic, and a PPD run loaded SDXL and its data, before failing on them.

Each test points the hub cache at an empty folder, as the existing tests of `recipe_needs`
and `Need` do (tests/test_hub.py), and fills it with only the marker files that say a repo is
there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmalign.config import InputError, load_config
from mmalign.train import Config
from mmalign.train.sources import check_sources, recipe_needs

SHA = "0123456789abcdef0123456789abcdef01234567"
SMPO = "configs/sd15/smpo_lora.yaml"
PPD = "configs/sdxl/ppd.yaml"


def fake_repo(cache: Path, repo_id: str, files: list[str], repo_type: str = "model") -> None:
    """The layout huggingface_hub writes: refs/main -> snapshots/<sha>/<files>."""
    folder = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(SHA)
    for name in files:
        path = folder / "snapshots" / SHA / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty hub cache, offline, and an empty mmalign cache."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MMALIGN_CACHE", str(tmp_path / "mmalign"))
    return tmp_path / "hf" / "hub"


def _lines(cfg: Config) -> list[str]:
    with pytest.raises(InputError) as info:
        check_sources(cfg)
    return str(info.value).splitlines()


def _recipe(path: str, tmp_path: Path, *overrides: str) -> Config:
    return load_config(Config, path, [f"output_dir={tmp_path / 'run'}", *overrides])


def test_smpo_names_its_scorer_and_the_scorers_processor_offline(hub, tmp_path):
    lines = _lines(_recipe(SMPO, tmp_path))
    assert lines[0].startswith("model.name_or_path: stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert lines[1].startswith("data.path: yuvalkirstain/pickapic_v2")
    assert lines[2] == (
        "data.smooth.scorer: pickscore's model yuvalkirstain/PickScore_v1 is not in the local "
        "cache (offline): download it with `hf download yuvalkirstain/PickScore_v1` where "
        "there is network, or give a local copy with data.smooth.scorer_path: [pickscore=DIR]"
    )
    assert lines[3].startswith(
        "data.smooth.scorer: pickscore's processor laion/CLIP-ViT-H-14-laion2B-s32B-b79K is "
        "not in the local cache (offline)"
    )
    assert "data.smooth.scorer_path: [pickscore:processor=DIR]" in lines[3]
    assert len(lines) == 4


def test_cached_scorer_files_are_not_named(hub, tmp_path):
    fake_repo(hub, "yuvalkirstain/PickScore_v1", ["config.json"])
    lines = _lines(_recipe(SMPO, tmp_path))
    assert not any("PickScore_v1" in line for line in lines)
    assert any("CLIP-ViT-H-14-laion2B-s32B-b79K" in line for line in lines)  # not there yet
    fake_repo(hub, "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", ["preprocessor_config.json"])
    assert not any("data.smooth" in line for line in _lines(_recipe(SMPO, tmp_path)))


def test_a_local_scorer_path_that_does_not_exist_is_named(hub, tmp_path):
    missing = tmp_path / "no-pickscore"
    lines = _lines(_recipe(SMPO, tmp_path, f"data.smooth.scorer_path=[pickscore={missing}]"))
    assert f"data.smooth.scorer: pickscore's model: {missing} does not exist" in lines[2]


def test_an_offline_rerun_with_cached_soft_labels_is_not_refused_for_the_scorer(hub, tmp_path):
    """A whole labelling by the same scorer is reused: the scorer does not load."""
    from mmalign.diffusion.smooth import REPORT, SMOOTH_VERSION

    folder = tmp_path / "mmalign" / "smoothed" / "abc"
    folder.mkdir(parents=True)
    (folder / REPORT).write_text(json.dumps({"key": f"v{SMOOTH_VERSION};fp;toy:fidelity"}))
    assert any("pickscore" in line for line in _lines(_recipe(SMPO, tmp_path)))  # another one
    (folder / REPORT).write_text(json.dumps({"key": f"v{SMOOTH_VERSION};fp;pickscore"}))
    assert not any("data.smooth" in line for line in _lines(_recipe(SMPO, tmp_path)))


def test_online_without_a_hub_the_scorer_is_named_too(hub, tmp_path, monkeypatch):
    import mmalign.hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(mmalign.hub, "hub_reachable", lambda timeout=5.0: False)
    lines = _lines(_recipe(SMPO, tmp_path))
    scorer = [line for line in lines if line.startswith("data.smooth.scorer: ")]
    assert len(scorer) == 2
    assert all("could not be downloaded (no connection to the hub)" in line for line in scorer)


def test_ppd_names_its_user_encoder_offline(hub, tmp_path):
    cfg = _recipe(PPD, tmp_path)
    encoder = "llava-hf/llava-onevision-qwen2-7b-ov-hf"
    assert [n.name for n in recipe_needs(cfg) if n.key == "ppd.encoder"] == [encoder]
    lines = _lines(cfg)
    assert lines[-1] == (
        f"ppd.encoder: {encoder} is not in the local cache (offline): download it with "
        f"`hf download {encoder}` where there is network, or set ppd.encoder to a local folder"
    )
    fake_repo(hub, encoder, ["config.json"])
    assert not any(line.startswith("ppd.encoder") for line in _lines(cfg))


def test_ppd_with_given_embeddings_needs_them_not_the_encoder(hub, tmp_path):
    given = tmp_path / "embeddings"
    cfg = _recipe(PPD, tmp_path, f"ppd.embeddings={given}")
    assert not any(n.key == "ppd.encoder" for n in recipe_needs(cfg))
    lines = _lines(cfg)
    assert not any(line.startswith("ppd.encoder") for line in lines)
    assert any(line.startswith(f"ppd.embeddings: {given} does not exist") for line in lines)
    given.mkdir()
    assert not any(line.startswith("ppd.") for line in _lines(cfg))


def test_toy_recipes_need_nothing_more(hub, tmp_path):
    for recipe in ("configs/toy/ppd.yaml", "configs/toy/smpo.yaml"):
        cfg = _recipe(recipe, tmp_path)
        assert recipe_needs(cfg) == []
        check_sources(cfg)  # toy encoder, toy scorer: nothing to look up


def test_a_dense_head_that_is_not_there_is_named_before_training(hub, tmp_path):
    none = tmp_path / "no-head"
    cfg = _recipe("configs/toy/dense_dpo.yaml", tmp_path, f"diffusion.dense.scorer=dense:{none}")
    (line,) = _lines(cfg)
    assert line.startswith(f"diffusion.dense.scorer: dense reward head {none} does not exist")
    assert "configs/toy/dense_reward.yaml" in line
    none.mkdir()
    (line,) = _lines(cfg)
    assert line.startswith(f"diffusion.dense.scorer: {none} holds no dense reward head")
    from mmalign.rewards.dense.model import CONFIG_FILE, MARKER, WEIGHTS_FILE

    (none / CONFIG_FILE).write_text(json.dumps({MARKER: {}}))
    (none / WEIGHTS_FILE).write_text("")
    check_sources(cfg)
    check_sources(
        _recipe("configs/toy/dense_dpo.yaml", tmp_path, "diffusion.dense.scorer=toy:flaws")
    )
