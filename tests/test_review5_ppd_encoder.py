"""PPD's user encoder in training: `ppd.encoder_device` (auto: the accelerator's device; cpu:
off the GPU, where the diffusion model already is) and `ppd.encoder_dtype` (float32 unless
asked), no longer `model.dtype`: a bf16 diffusion run embedded its users in bf16, unlike
`mmalign data user-embed` (float32 by default) and every run before. Given `ppd.embeddings`
made in another dtype than `ppd.encoder_dtype` are used, with a warning naming both."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from mmalign.config import ConfigError, load_config
from mmalign.train import Config

RECIPE = "configs/toy/ppd.yaml"
BF16_MODEL = ["model.dtype=bfloat16", "train.mixed_precision=bf16"]


class Stop(Exception):
    """Raised by the recording loader: training got as far as loading the encoder."""


def _encoder_load(monkeypatch, cfg: Config, device: Any) -> dict[str, Any]:
    """The keyword arguments `training_embeddings` loads the encoder with."""
    import mmalign.vlm.load
    from mmalign.diffusion import ppd_recipe

    seen: dict[str, Any] = {}

    def record(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(mmalign.vlm.load, "load_vlm", record)
    monkeypatch.setattr("mmalign.vlm.user_embed.examples_from_pairs", lambda rows: ({"u": []}, 0))
    with pytest.raises(Stop):
        ppd_recipe.training_embeddings(cfg, [], device=device)
    return seen


def test_the_encoder_is_float32_on_the_accelerator_whatever_model_dtype(monkeypatch):
    cfg = load_config(Config, RECIPE, BF16_MODEL)
    assert cfg.ppd is not None
    assert (cfg.ppd.encoder_device, cfg.ppd.encoder_dtype) == ("auto", "float32")
    seen = _encoder_load(monkeypatch, cfg, torch.device("cuda"))  # a recorder: nothing moves
    assert seen["dtype"] == "float32"  # was model.dtype: bfloat16
    assert str(seen["device"]) == "cuda"


def test_encoder_device_cpu_keeps_the_encoder_off_the_accelerator(monkeypatch):
    cfg = load_config(Config, RECIPE, [*BF16_MODEL, "ppd.encoder_device=cpu"])
    seen = _encoder_load(monkeypatch, cfg, torch.device("cuda"))
    assert str(seen["device"]) == "cpu" and seen["dtype"] == "float32"


def test_encoder_dtype_is_the_encoders_and_is_recorded(monkeypatch, tmp_path):
    from mmalign.diffusion import ppd_recipe
    from mmalign.vlm import user_embed

    cfg = load_config(Config, RECIPE, ["ppd.encoder_dtype=bfloat16"])
    assert _encoder_load(monkeypatch, cfg, torch.device("cpu"))["dtype"] == "bfloat16"
    # computed: the dtype is recorded (the run's adapter meta, read for new users at inference)
    monkeypatch.setattr("mmalign.vlm.load.load_vlm", lambda *a, **k: object())
    monkeypatch.setattr(
        user_embed, "cached_user_embeddings", lambda *a, **k: ({"u": torch.ones(3)}, False)
    )
    _, info = ppd_recipe.training_embeddings(cfg, [], device=torch.device("cpu"))
    assert info["encoder_dtype"] == "bfloat16"


@pytest.mark.parametrize(
    "override, words",
    [("ppd.encoder_dtype=float64", ["ppd.encoder_dtype", "float64"]),
     ("ppd.encoder_device=cuda:1", ["ppd.encoder_device", "cuda:1"])],
)  # fmt: skip
def test_other_encoder_settings_are_refused_naming_the_key(override: str, words: list[str]):
    with pytest.raises(ConfigError) as err:
        load_config(Config, RECIPE, [override])
    assert all(w in str(err.value) for w in words)


def _given(tmp_path, meta: dict[str, Any] | None) -> str:
    from mmalign.vlm.user_embed import write_embeddings

    out = tmp_path / "given"
    write_embeddings({"u": torch.ones(3)}, out, meta or {})
    if meta is None:
        (out / "user_embeddings.json").unlink()
    return str(out)


@pytest.mark.parametrize(
    "meta, made_in",
    [({"model": "toy:vlm", "dtype": "bfloat16"}, "bfloat16"),  # `data user-embed --dtype`
     ({"model": "toy:vlm", "encoder_dtype": "float16"}, "float16"),  # a PPD run's own file
     ({"model": "toy:vlm"}, "float32")],  # written before the dtype was recorded: float32
)  # fmt: skip
def test_given_embeddings_of_another_dtype_warn_naming_both(tmp_path, meta, made_in):
    from mmalign.diffusion import ppd_recipe

    wanted = "float32" if made_in != "float32" else "bfloat16"
    cfg = load_config(
        Config, RECIPE, [f"ppd.embeddings={_given(tmp_path, meta)}", f"ppd.encoder_dtype={wanted}"]
    )
    with pytest.warns(UserWarning) as record:
        embs, info = ppd_recipe.training_embeddings(cfg, [])
    text = " ".join(str(w.message) for w in record)
    assert made_in in text and wanted in text and "ppd.encoder_dtype" in text
    assert set(embs) == {"u"}  # used all the same: given embeddings are the user's choice
    assert info["encoder_dtype"] == made_in  # new users at inference: as the training users


@pytest.mark.parametrize("meta", [{"model": "toy:vlm", "dtype": "float32"}, None])
def test_given_embeddings_of_the_same_or_an_unknown_dtype_do_not_warn(tmp_path, meta):
    from mmalign.diffusion import ppd_recipe

    cfg = load_config(Config, RECIPE, [f"ppd.embeddings={_given(tmp_path, meta)}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = ppd_recipe.training_embeddings(cfg, [])
    assert info["encoder_dtype"] == "float32"


def test_the_sdxl_recipe_loads_with_a_bfloat16_encoder():
    cfg = load_config(Config, "configs/sdxl/ppd.yaml")
    assert cfg.ppd is not None and cfg.ppd.encoder_dtype == "bfloat16"
    assert cfg.ppd.encoder_device == "auto"
