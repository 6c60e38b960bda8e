"""Dataset cards (datasets/*.yaml): each parses, a recipe may name one, `data show` opens one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mmalign.cli import main
from mmalign.config import ConfigError, load_config
from mmalign.data.cards import CARDS_DIR, load_card
from mmalign.train import Config

ROOT = Path(__file__).resolve().parents[1]
CARDS = sorted(CARDS_DIR.glob("*.yaml"))
TOY_KINDS = ("pairs", "style", "users", "flaws", "vqa", "hallucination", "safety")
NAMED = ("pickapic_v2", "pick_style", "hpdv2", "richhf_18k", "rlaif_v", "mmsafe_po", "realign")


def test_the_folder_has_a_card_per_dataset():
    names = {p.stem for p in CARDS}
    assert {f"toy_{k}" for k in TOY_KINDS} | set(NAMED) <= names
    assert not (CARDS_DIR / "__init__.py").exists()


@pytest.mark.parametrize("path", CARDS, ids=lambda p: p.stem)
def test_every_card_parses_and_says_what_a_user_needs(path):
    card = load_card(path)
    assert card.name and card.license and card.columns and card.splits
    assert card.source, "a card names its source: hub id, env variable, toy builder or url"
    if "toy" in card.source:
        assert card.data_config()["path"] == f"toy:{card.source['toy']}"


def test_import_datasets_from_the_repository_root_is_hugging_faces():
    code = "import datasets, sys; print(datasets.__file__); assert hasattr(datasets, 'Dataset')"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "site-packages" in out.stdout


def _recipe(tmp_path: Path, data: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"model: {{name_or_path: toy:sd}}\ndata: {data}\n")
    return path


def test_a_recipe_names_a_card_and_its_own_keys_win(tmp_path):
    cfg = load_config(Config, _recipe(tmp_path, str(CARDS_DIR / "toy_pairs.yaml")))
    assert (cfg.data.path, cfg.data.split, cfg.data.toy) == ("toy:pairs", "train", {"n": 64})
    cfg = load_config(Config, _recipe(tmp_path, "{card: pickapic_v2, split: validation}"))
    card_path = load_card("pickapic_v2").data_config()["path"]
    assert (cfg.data.path, cfg.data.split) == (card_path, "validation")
    cfg = load_config(Config, _recipe(tmp_path, "{card: toy_pairs, max_samples: 5}"))
    assert (cfg.data.path, cfg.data.max_samples) == ("toy:pairs", 5)
    # toy data is built, not split: another split is refused, not ignored (review 6)
    with pytest.raises(ConfigError, match="toy data is built, not split"):
        load_config(Config, _recipe(tmp_path, "{card: toy_pairs, split: validation}"))
    cfg = load_config(Config, _recipe(tmp_path, "toy_pairs"), ["data.toy.n=8"])
    assert cfg.data.toy == {"n": 8}


def test_an_environment_variable_points_a_card_at_a_local_copy(monkeypatch, tmp_path):
    monkeypatch.delenv("MMALIGN_PICKAPIC", raising=False)
    assert load_card("pickapic_v2").data_config()["path"] == "yuvalkirstain/pickapic_v2"
    monkeypatch.setenv("MMALIGN_PICKAPIC", str(tmp_path))
    assert load_card("pickapic_v2").data_config()["path"] == str(tmp_path)


def test_bad_cards_are_named(tmp_path):
    with pytest.raises(ConfigError, match="not found; did you mean 'toy_pairs'"):
        load_card("toy_pair")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkind: image\nreader: pairs\nsource: {toy: vqa}\nlicense: x\nrow: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'row'"):
        load_card(bad)
    none = tmp_path / "none.yaml"
    none.write_text("name: x\nkind: dense\nreader: none\nsource: {url: x}\nlicense: x\n")
    with pytest.raises(ConfigError, match="no preference-pair reader"):
        load_card(none).data_config()


def test_data_show_builds_a_toy_card_and_counts_its_rows(capsys):
    assert main(["data", "show", "toy_vqa", "--sample", "16"]) == 0
    out = capsys.readouterr().out
    assert "resolves to: data.path=toy:vqa data.split=train" in out
    assert "sample: 16 rows" in out and "kept 16, skipped 0" in out
