"""Dataset cards: one small YAML file per dataset mmalign reads or builds (`datasets/*.yaml`).

A card names where the data comes from (a hub id, a local folder given by an environment
variable, or a toy builder), its license, how its columns map to the `PreferencePair` schema,
its default split and tie/filter policy, and how many rows it has. A recipe may name a card
instead of a path (`data: datasets/pickapic_v2.yaml`, or `data: {card: pickapic_v2, split:
validation}`: the keys given win over the card's), and `mmalign data show CARD` prints what a
card resolves to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, load_yaml, yaml_problem
from ..suggest import did_you_mean

CARDS_DIR = Path(__file__).resolve().parents[2] / "datasets"  # in a source checkout
READERS = (
    "pickapic", "pairs", "llava", "mmsafe", "realign", "trl", "richhf", "prompts", "none",
)  # fmt: skip
KINDS = ("image", "text", "dense")
CARD_KEYS = (
    "name", "description", "kind", "reader", "source", "license", "columns", "split",
    "splits", "ties", "filters", "toy", "notes",
)  # fmt: skip


@dataclass(frozen=True)
class DatasetCard:
    """A parsed card; `data_config()` is what a recipe's `data:` takes from it."""

    file: Path
    name: str
    description: str
    kind: str
    reader: str
    source: dict[str, str]
    license: str
    columns: dict[str, str]
    split: str | None
    splits: dict[str, int | None]
    ties: str | None = None
    filters: list[str] = field(default_factory=list)
    toy: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def location(self) -> str:
        """`toy:<kind>`, the folder in the card's environment variable, or the hub id."""
        if "toy" in self.source:
            return f"toy:{self.source['toy']}"
        env = self.source.get("env")
        if env and os.environ.get(env):
            return os.environ[env]
        if "hub" in self.source:
            return self.source["hub"]
        raise ConfigError(
            f"{self.file}: set {env} to the dataset's local folder (the card names no hub id)"
        )

    def data_config(self) -> dict[str, Any]:
        """The recipe `data:` keys this card stands for."""
        if self.reader in ("none", "prompts"):
            raise ConfigError(
                f"{self.file}: mmalign has no preference-pair reader for {self.name} "
                f"(reader: {self.reader}); {self.notes}".rstrip("; ")
            )
        out: dict[str, Any] = {"path": self.location}
        if self.split is not None:
            out["split"] = self.split
        if self.toy:
            out["toy"] = dict(self.toy)
        return out


def find_card(name: str | Path) -> Path:
    """A card file: the path as given, else `datasets/<name>[.yaml]` of this checkout."""
    given = Path(name).expanduser()
    candidates = [given, given.with_suffix(".yaml")] if given.suffix != ".yaml" else [given]
    candidates += [CARDS_DIR / given.name, CARDS_DIR / f"{given.name}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    known = sorted(p.stem for p in CARDS_DIR.glob("*.yaml")) if CARDS_DIR.is_dir() else []
    hint = did_you_mean(given.stem, known) if known else "no datasets/ folder next to mmalign"
    raise ConfigError(f"dataset card '{name}' not found; {hint}")


def _mapping(raw: dict[str, Any], key: str, file: Path) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{file}: '{key}' must be a mapping, got {value!r}")
    return value


def load_card(name: str | Path) -> DatasetCard:
    """Read and check a card (unknown keys, reader, kind and source are named when wrong)."""
    file = find_card(name)
    try:
        raw = load_yaml(file.read_text(encoding="utf-8"))  # a key given twice is an error
    except yaml.YAMLError as err:
        raise ConfigError(f"{file}: {yaml_problem(err)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: a card is a mapping of keys")
    for key in raw:
        if key not in CARD_KEYS:
            raise ConfigError(f"{file}: unknown key '{key}'; {did_you_mean(key, CARD_KEYS)}")
    for key in ("name", "kind", "reader", "source", "license"):
        if key not in raw:
            raise ConfigError(f"{file}: missing required key '{key}'")
    if raw["reader"] not in READERS:
        raise ConfigError(
            f"{file}: reader '{raw['reader']}'; {did_you_mean(raw['reader'], READERS)}"
        )
    if raw["kind"] not in KINDS:
        raise ConfigError(f"{file}: kind '{raw['kind']}'; {did_you_mean(raw['kind'], KINDS)}")
    source = {str(k): str(v) for k, v in _mapping(raw, "source", file).items()}
    if not {"hub", "env", "toy", "url"} & set(source):
        raise ConfigError(f"{file}: source needs one of hub, env, toy or url")
    return DatasetCard(
        file=file,
        name=str(raw["name"]),
        description=str(raw.get("description", "")).strip(),
        kind=raw["kind"],
        reader=raw["reader"],
        source=source,
        license=str(raw["license"]),
        columns={str(k): str(v) for k, v in _mapping(raw, "columns", file).items()},
        split=raw.get("split"),
        splits=dict(_mapping(raw, "splits", file)),
        ties=raw.get("ties"),
        filters=_strings(raw, "filters", file),
        toy=dict(_mapping(raw, "toy", file)),
        notes=str(raw.get("notes", "")).strip(),
    )


def _strings(raw: dict[str, Any], key: str, file: Path) -> list[str]:
    """A card's list of sentences; an unquoted item holding ": " is a YAML mapping, refused."""
    items = raw.get(key) or []
    bad = [x for x in items if not isinstance(x, str)] if isinstance(items, list) else [items]
    if bad:
        raise ConfigError(
            f"{file}: {key} must be a list of strings; {bad[0]!r} is not (quote an item that "
            "holds ': ')"
        )
    return list(items)


def expand_data(value: Any) -> Any:
    """A recipe's raw `data:` value with a card expanded: `"datasets/x.yaml"` or `{card: x,
    ...}` become the card's keys, overridden by the keys written beside `card`. A string
    naming a dataset folder or a data file that is not YAML (`data=runs/labels`, e.g. an
    export of `mmalign label`) is the data itself: `{path: value, split: train}`."""
    if isinstance(value, str):
        local = Path(value).expanduser()
        if local.is_dir() or (local.is_file() and local.suffix not in (".yaml", ".yml")):
            return {"path": value, "split": "train"}
        value = {"card": value}
    if not isinstance(value, dict) or "card" not in value:
        return value
    rest = {k: v for k, v in value.items() if k != "card"}
    return {**load_card(value["card"]).data_config(), **rest}
