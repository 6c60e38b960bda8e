"""Typed dataclass configs from YAML, with `key=value` overrides.

Every error names the key: an unknown key suggests the closest valid one, a
wrong type names the expected type and the value, a missing required field is
named. Nothing is coerced silently (a YAML `yes` is not a path, `"1"` is not
an int); the leniencies are two spellings YAML 1.1 reads otherwise: a float written in
exponent form without a dot or sign (`1e-5`, `5e3`: YAML 1.1 text, read here as numbers
everywhere, loss arguments and builder options included, as YAML 1.2 reads them), and a choice
spelled like a boolean (`mixed_precision: no`, read as false). A text value that starts with
`~/` is a path in the home folder, expanded as a shell would (a YAML file is not a shell).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from .suggest import closest, did_you_mean

T = TypeVar("T")
_COMMENT = re.compile(r"(^|\s)#")  # where YAML starts a comment
_HOME_PATH = re.compile(r"~[^/\s]*(/|$)")  # `~/x`, `~user/x`: a path in a home folder


class InputError(ValueError):
    """Input the user can fix (a missing file, a model not in the cache, a bad value): `mmalign`
    prints the message and exits with status 2, without a traceback. The message names the
    input and what to do."""


class ConfigError(InputError):
    """A config that cannot be used; the message names the key."""


YAML_SUFFIXES = (".yaml", ".yml")


def _sibling_hint(path: Path) -> str:
    """`; did you mean ...?` naming the YAML file beside a missing `path` that was likely meant:
    the same name with the other extension (`dpo.yml` for `dpo.yaml`) first, else the closest
    name; "" when its folder holds none."""
    folder = path.parent
    if not folder.is_dir():
        return ""
    names = [p.name for p in folder.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file()]
    same_stem = [n for n in names if Path(n).stem == path.stem]
    guess = same_stem[0] if same_stem else closest(path.name, names)
    return f"; did you mean '{folder / guess}'?" if guess else ""


def load_config(cls: type[T], path: str | Path | None, overrides: Iterable[str] = ()) -> T:
    """Read YAML at `path` (or start empty), apply `a.b.c=value` overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{path} is a folder, not a YAML file: name the recipe's .yaml file")
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}{_sibling_hint(path)}")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8"
            ) from None
        try:
            loaded = load_yaml(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: {yaml_problem(err)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys, got {loaded!r}")
        raw = loaded
    raw = apply_overrides(raw, overrides, cls)
    return from_dict(cls, raw)


def apply_overrides(
    raw: dict[str, Any], overrides: Iterable[str], cls: type | None = None
) -> dict[str, Any]:
    """Set `a.b.c=value` (value parsed as YAML; list items by index: `objective.0.beta=1`).

    With the dataclass `cls`, a key the YAML leaves out starts from the
    field's default, so `objective.0.beta=1` edits the default objective.
    """
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        if "[" in key:  # objective[0].beta: the common guess, named with its spelling here
            dotted = key.replace("[", ".").replace("]", "")
            raise ConfigError(f"override '{key}': list items take a dotted index: '{dotted}'")
        try:
            value = load_yaml(text) if text.strip() else None
        except yaml.YAMLError as err:
            problem = yaml_problem(err)
            raise ConfigError(f"override '{item}': the value is not YAML ({problem})") from None
        if _COMMENT.search(text) and "#" not in str(value):  # YAML dropped it as a comment
            quoted = "'" + text.replace("'", "''") + "'"  # a YAML single-quoted scalar
            raise ConfigError(
                f"override '{item}': YAML reads ' #...' as a comment, so the value would be "
                f"{value!r}; to keep the '#' give the value as YAML text, {key}={quoted} "
                "(quoted again for your shell)"
            )
        parts = key.split(".")
        node: Any = raw
        schema = cls
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"override '{key}': '{where}' needs a list index below {len(node)}"
                    )
                index = int(part)
                if last:
                    node[index] = value
                else:
                    node = node[index]
                schema = None
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                    continue
                if node.get(part) is None:
                    node[part] = _default_raw(schema, part)
                schema = _field_dataclass(schema, part)
                if isinstance(node[part], str) and hasattr(schema, "expand_raw"):
                    node[part] = {"card": node[part]}  # `data: CARD`, then `data.split=...`
                node = node[part]
            else:
                raise ConfigError(
                    f"override '{key}': '{'.'.join(parts[:depth])}' is a value, not a section"
                )
    return raw


def _default_raw(schema: type | None, name: str) -> Any:
    """The default of field `name` of dataclass `schema` as plain YAML data ({} if none)."""
    if schema is None or not dataclasses.is_dataclass(schema):
        return {}
    for f in dataclasses.fields(schema):
        if f.name == name:
            if f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            elif f.default is not dataclasses.MISSING:
                value = copy.deepcopy(f.default)
            else:
                return {}
            if dataclasses.is_dataclass(value):
                return dataclasses.asdict(value)  # type: ignore[arg-type]
            return {} if value is None else value
    return {}


def _field_dataclass(schema: type | None, name: str) -> type | None:
    """The dataclass type of field `name` (through Optional), or None."""
    if schema is None or not dataclasses.is_dataclass(schema):
        return None
    tp = typing.get_type_hints(schema).get(name)
    candidates = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
    for candidate in candidates:
        if dataclasses.is_dataclass(candidate):
            return candidate  # type: ignore[return-value]
    return None


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass `cls` from a mapping, checking keys and types recursively."""
    label = path or "config"
    expand = getattr(cls, "expand_raw", None)  # a schema may accept a shorthand, e.g. a card
    if expand is not None:
        data = expand(data)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label}: expected a mapping of keys, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            full = _join(path, str(key))
            candidates = [_join(path, name) for name in fields]
            raise ConfigError(f"unknown key '{full}'; {did_you_mean(full, candidates)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = _join(path, name)
        if name in data:
            kwargs[name] = convert(data[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{key}'")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as err:  # a dataclass's own __post_init__ checks name their key
        raise ConfigError(str(err)) from None


def convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; returns the (possibly nested) converted value."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return _plain(value)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return convert(value, option, key)
            except ConfigError as err:
                errors.append(err)
        if len(options) == 1:
            raise errors[0]
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_show(value)}")
    if origin is Literal:
        if value in args:
            return value
        if isinstance(value, bool):  # YAML 1.1 reads no/off/false (yes/on/true) as a bool
            words = {"yes", "on", "true"} if value else {"no", "off", "false"}
            spelled = [a for a in args if isinstance(a, str) and a.lower() in words]
            if len(spelled) == 1:  # `train.mixed_precision=no`
                return spelled[0]
        choices = ", ".join(repr(a) for a in args)
        hint = did_you_mean(str(value), [str(a) for a in args]) if isinstance(value, str) else ""
        raise ConfigError(f"{key}: expected one of {choices}, got {_show(value)}. {hint}".strip())
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)  # type: ignore[arg-type]
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {_show(value)}")
        item_type = args[0] if args else Any
        items = [convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {_show(value)}")
        value_type = args[1] if len(args) == 2 else Any
        return {str(k): convert(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, _ExponentFloat):  # `revision: 8e41925` is the text written
            return value.text
        if isinstance(value, str):
            # `~/runs/x` in a YAML file or a quoted override, where no shell expands it
            return os.path.expanduser(value) if _HOME_PATH.match(value) else value
    elif isinstance(tp, type):
        if isinstance(value, tp):
            return value
    else:
        raise ConfigError(f"{key}: unsupported annotation {tp!r}")
    hint = ""
    if tp is str and isinstance(value, int | float) and not isinstance(value, bool):
        # `revision: 1234567` (an all-digit short hash): YAML reads a number
        hint = f"; YAML read it as a number: quote it to give the text, {key}: '{value}'"
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_show(value)}{hint}")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.safe_load`, but a key given twice in one mapping is an error: YAML keeps the last
    and silently drops the first (a second `model:` section would replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (YAML would keep only the last)",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _ExponentFloat(float):
    """A number YAML 1.1 reads as text (`1e-5`, `5e3`), read as a float that keeps the text it
    was written as: a text key (`model.revision: 8e41925`, a short commit hash) gets the text
    back (`convert`), every other key the number."""

    text: str

    def __new__(cls, text: str) -> _ExponentFloat:
        number = super().__new__(cls, text.replace("_", ""))
        number.text = text
        return number

    def __reduce__(self) -> tuple[Any, ...]:  # copy.deepcopy keeps the text
        return (_ExponentFloat, (self.text,))


def _plain(value: Any) -> Any:
    """`value` with every `_ExponentFloat` in it a plain float (what dumps and loaders expect)."""
    if isinstance(value, _ExponentFloat):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return value


# YAML 1.1 floats need a dot and a signed exponent (`1.0e-5`): `1e-5`, `5e3` or `1.5E3` were
# read as text, and a loss argument or a toy builder option received the string
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_EXPONENT_TAG = "tag:mmalign,2026:exponent-float"
_UniqueKeyLoader.add_implicit_resolver(_EXPONENT_TAG, _EXPONENT_FLOAT, list("-+0123456789."))
_UniqueKeyLoader.add_constructor(
    _EXPONENT_TAG, lambda loader, node: _ExponentFloat(loader.construct_scalar(node))
)  # on this loader only: yaml.safe_load is unchanged
# where one reaches a dump untyped (`toy data --set` options): written as the number it is
yaml.SafeDumper.add_representer(_ExponentFloat, lambda dumper, v: dumper.represent_float(float(v)))


def load_yaml(text: str) -> Any:
    """Parse YAML as `yaml.safe_load` does, refusing a key given twice in one mapping."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects


def yaml_problem(err: yaml.YAMLError) -> str:
    """One line from a YAML parser error: where (1-based line and column) and what."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}YAML syntax error: {problem}"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"
