"""Review 9: a scorer's files, and Re-Align's CLIP weights, with a hub that cannot be reached.

Online (no `HF_HUB_OFFLINE`) with no connection, `eval winrate --scorers pickscore` drew every
base and tuned image, then PickScore's loader retried the dead hub for about 50 s and named the
model only, not its processor (a second repository); `eval accuracy --scorer pickscore` waited
as long. `rewards/files.py` checked the cache only when offline. Now one quick request
(`hub.hub_reachable`, as `mmalign train` asks it) tells, and every id not cached is named at
once, before any image is drawn or model loaded. `data realign --clip ViT-B-32` waited as long
and ended in open_clip's "hf download ID": it now names the hub repo and `--clip-pretrained`.

The dead hub is simulated as tests/test_review6_model_resolution.py does: the probe
(`hub._probe`) says no, and every downloader fails the test if it is reached.
"""

from __future__ import annotations

import pytest
import transformers

import mmalign.diffusion as diffusion
import mmalign.rewards as rewards
from mmalign import hub
from mmalign.cli import main
from mmalign.config import InputError
from mmalign.rewards import tiny
from mmalign.rewards.files import require_scorer_files

MODEL, PROCESSOR = "yuvalkirstain/PickScore_v1", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
CLIP_REPO = "timm/vit_base_patch32_clip_224.openai"
DEAD = "could not be downloaded (no connection to the hub)"


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{what} before the hub's files were checked")

    return refuse


@pytest.fixture
def dead_hub(monkeypatch, tmp_path) -> list[str]:
    """Online mode, an empty cache; the hub answers no probe (each probe is recorded), and any
    download fails the test."""
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "0")
    asked: list[str] = []

    def probe(endpoint: str, timeout: float) -> bool:
        asked.append(endpoint)
        return False

    monkeypatch.setattr(hub, "_REACHABLE", {})
    monkeypatch.setattr(hub, "_probe", probe)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _refuse("a loader reached the hub"))
    monkeypatch.setattr(huggingface_hub.file_download, "hf_hub_download",
                        _refuse("a loader reached the hub"))  # fmt: skip
    return asked


@pytest.fixture
def probes(dead_hub, monkeypatch) -> list[str]:
    """`dead_hub`, and loading a CLIP model or a processor fails the test."""
    monkeypatch.setattr(transformers.CLIPModel, "from_pretrained", _refuse("CLIP loaded"))
    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", _refuse("a processor"))
    return dead_hub


@pytest.fixture
def no_models(monkeypatch):
    """Loading a diffusion model, drawing an image or building a scorer fails the test."""
    import mmalign.eval.winrate as winrate

    monkeypatch.setattr(diffusion, "load_pipeline", _refuse("a diffusion model was loaded"))
    monkeypatch.setattr(diffusion, "load_tuned", _refuse("a tuned model was loaded"))
    monkeypatch.setattr(winrate, "generate_or_reuse", _refuse("an image was drawn"))
    monkeypatch.setattr(rewards, "get_scorer", _refuse("a scorer was built"))


def _both_named(err: str) -> None:
    assert f"pickscore's model {MODEL} {DEAD}" in err
    assert f"download it with `hf download {MODEL}`" in err
    assert "give a local copy with --scorer-path pickscore=DIR" in err
    assert f"pickscore's processor {PROCESSOR} {DEAD}" in err
    assert f"download it with `hf download {PROCESSOR}`" in err
    assert "give a local copy with --scorer-path pickscore:processor=DIR" in err


def test_scorer_files_name_model_and_processor_after_one_probe(probes):
    with pytest.raises(InputError) as caught:
        require_scorer_files({"pickscore": {}})
    _both_named(str(caught.value))
    assert len(probes) == 1
    with pytest.raises(InputError):  # asked once per process, not per check
        require_scorer_files({"pickscore": {}, "hpsv2": {}})
    assert len(probes) == 1


def test_eval_winrate_refuses_before_any_model_or_image(tmp_path, probes, no_models, capsys):
    out = tmp_path / "eval"
    code = main(["eval", "winrate", "--tuned", str(tmp_path), "--base", "some/base", "--n", "2",
                 "--scorers", "pickscore", "--out", str(out)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    _both_named(err)
    assert "Traceback" not in err and "Retry" not in err
    assert not (out / "images").exists()


def test_run_winrate_refuses_before_drawing(tmp_path, probes, no_models):
    from mmalign.eval.winrate import run_winrate

    with pytest.raises(InputError) as caught:
        run_winrate(object(), object(), ["a red circle"], ["pickscore"], tmp_path / "eval",
                    steps=1, batch_size=1, report=False)  # fmt: skip
    _both_named(str(caught.value))
    assert not (tmp_path / "eval" / "images").exists()


def test_eval_accuracy_refuses_before_the_scorer_or_the_data(probes, no_models, capsys):
    code = main(["eval", "accuracy", "--data", "pickapic:test", "--scorer", "pickscore"])
    assert code == 2  # get_scorer, and the data it scores, are never reached (no_models)
    _both_named(capsys.readouterr().err)


def test_the_scorer_itself_refuses_before_loading(probes):
    from mmalign.rewards.pickscore import PickScore

    with pytest.raises(InputError) as caught:
        PickScore()  # CLIPModel.from_pretrained is never called (the fixture refuses it)
    _both_named(str(caught.value))


def test_a_reachable_hub_or_local_files_are_left_to_the_loader(tmp_path, probes, monkeypatch):
    model, processor = tiny.save_pickscore(tmp_path / "parts")
    require_scorer_files({"pickscore": {"path": str(model), "processor": str(processor)}})
    assert probes == []  # nothing to download: the hub is not asked
    monkeypatch.setattr(hub, "_probe", lambda endpoint, timeout: True)
    monkeypatch.setattr(hub, "_REACHABLE", {})
    require_scorer_files({"pickscore": {}})  # the hub answers: the loader downloads


# ---------------------------------------------------------------- Re-Align's CLIP embedder


def _clip_named(err: str, why: str) -> None:
    assert (
        f"--clip ViT-B-32 --clip-pretrained openai: open_clip's weights, hub repo {CLIP_REPO}"
        in err
    )
    assert why in err
    assert f"download them with `hf download {CLIP_REPO}` where there is network" in err
    assert "give a local checkpoint file with --clip-pretrained FILE" in err
    assert "--clip ViT-B-32-quickgelu" in err  # the local file does not carry the tag's config
    assert "hf download ID" not in err


@pytest.fixture
def no_open_clip_load(monkeypatch):
    import open_clip

    monkeypatch.setattr(open_clip, "create_model_and_transforms", _refuse("open_clip loaded"))


def test_realign_clip_names_the_repo_and_the_local_option(dead_hub, no_open_clip_load):
    from mmalign.vlm.realign_embed import OpenClipEmbedder

    with pytest.raises(InputError) as caught:
        OpenClipEmbedder("ViT-B-32", "openai")
    _clip_named(str(caught.value), DEAD)
    assert len(dead_hub) == 1


def test_realign_clip_offline(dead_hub, no_open_clip_load, monkeypatch):
    from mmalign.vlm.realign_embed import OpenClipEmbedder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError) as caught:
        OpenClipEmbedder("ViT-B-32", "openai")
    _clip_named(str(caught.value), "is not in the local cache (offline)")
    assert dead_hub == []


def test_realign_clip_download_failure_names_the_repo():
    """A failure met while open_clip downloads (the hub answered the probe, then failed) is
    worded the same way, not as open_clip's "hf download ID"."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    from mmalign.vlm.realign_embed import clip_download_error

    try:
        try:
            raise LocalEntryNotFoundError("cannot find the requested files in the local cache")
        except LocalEntryNotFoundError as e:
            raise RuntimeError(f"Failed to download weights for tag 'openai': {e}")  # noqa: B904
    except RuntimeError as err:
        message = clip_download_error(err, "ViT-B-32", "openai")
    assert message is not None
    _clip_named(message, "could not be downloaded (Failed to download weights for tag 'openai'")
    assert clip_download_error(ValueError("other"), "ViT-B-32", "openai") is None


def test_data_realign_clip_refuses_at_once(tmp_path, dead_hub, no_open_clip_load, capsys):
    code = main(["data", "realign", "--model", "toy:vlm", "--data", "toy:vqa", "--out",
                 str(tmp_path / "ra"), "--clip", "ViT-B-32", "--max-samples", "2"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    _clip_named(err, DEAD)
    assert not (tmp_path / "ra").exists()
