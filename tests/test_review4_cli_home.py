"""A recipe's paths that start with `~` (`output_dir: ~/runs/x` in a YAML file, or a quoted
`output_dir='~/runs/x'` override, which no shell expands) were used as written: training made a
folder literally named `~` under the working directory, and `model.name_or_path: ~/models/sd`
was looked up as a hub id. The config layer now expands them, as a shell would."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmalign.config import load_config
from mmalign.train import Config


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_output_dir_override(home: Path) -> None:
    cfg = load_config(Config, "configs/toy/mapo.yaml", ["output_dir=~/runs/my run"])
    assert cfg.output_dir == str(home / "runs" / "my run")


def test_paths_in_a_recipe_file(home: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {name_or_path: ~/models/sd}\ndata: {path: ~/data/pairs, split: train}\n"
        "diffusion: {cache_dir: ~/cache}\noutput_dir: ~/runs/x\n"
    )
    cfg = load_config(Config, recipe)
    assert cfg.model.name_or_path == str(home / "models" / "sd")
    assert cfg.data.path == str(home / "data" / "pairs")
    assert cfg.diffusion.cache_dir == str(home / "cache")
    assert cfg.output_dir == str(home / "runs" / "x")


@pytest.mark.parametrize("text", ["toy:sd", "runs/~x", "~ a cat", "a ~/b"])
def test_other_text_is_kept(home: Path, text: str) -> None:
    cfg = load_config(Config, "configs/toy/mapo.yaml", [f"validation.prompts=['{text}']"])
    assert cfg.validation.prompts == [text]


def test_a_run_saved_before_expansion_resumes(tmp_path) -> None:
    """A run saved `~/cache` as written; the config now expands it: the same setting."""
    import json

    from mmalign.train.resume import recipe_changes

    saved = {"config": {"diffusion": {"cache_dir": "~/cache"}, "output_dir": "runs/x"}}
    (tmp_path / "run.json").write_text(json.dumps(saved))
    now = {"diffusion": {"cache_dir": str(Path("~/cache").expanduser())}, "output_dir": "runs/x"}
    assert recipe_changes(tmp_path / "run.json", now) == []
    now["diffusion"]["cache_dir"] = "/elsewhere"
    assert recipe_changes(tmp_path / "run.json", now) == [
        "diffusion.cache_dir: '~/cache' -> '/elsewhere'"
    ]
