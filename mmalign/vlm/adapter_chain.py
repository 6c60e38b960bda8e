"""Chains of PEFT adapter folders: an adapter trained on another adapter merged into its base
(a LoRA run that started from an SFT run's `adapter/`, `VLMRecipe.save`) names that folder as
its base, which may name another in turn, down to the model at the root.

`load_vlm` follows the chain from MODEL and from an adapter given on top of it (`stacked`):
`mmalign chat BASE --adapter DPO` applies DPO's SFT start, merged, between BASE and DPO, the
weights `load_vlm(DPO)` gives. A chain whose start adapters MODEL does not hold is refused,
and a root that is clearly another model than MODEL is warned about (`check_root`).

Where a chain link points: `base_model_name_or_path` in `adapter_config.json` holds the start
adapter's absolute path (PEFT's field, which its own loaders and transformers read as a model
to load from anywhere). `BASE_LINK` beside it holds the same folder relative to the adapter
folder, and wins where it exists: run folders moved or copied together keep their chain. The
link also holds the start adapter's `fingerprint`: a link that leads to another adapter (the
DPO run copied next to another SFT run) falls back to the absolute path if that one is the
adapter it was trained on, else is refused naming both.

A `merged/` folder (`vlm.merge: true`, `lora.save_merged`) is a plain model that holds its
run's adapters merged in: `MERGED_RECORD` beside its weights names them (and their base), and
an adapter given on top counts them as MODEL's own, so its start adapters are not applied a
second time. An adapter trained from a merged folder counts them as its start adapters in
the same way (`starts_below`): given on the plain base, they go between them, as on an
adapter trained from an adapter. Adapters are compared by their fingerprints, so a copy of
one is the same one.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import InputError
from ..hub import looks_local
from ..weights import weight_files

# a chain of adapter folders each naming the next as its base, followed at most this deep
MAX_ADAPTER_CHAIN = 16
# the start adapter's folder relative to the adapter folder, beside its adapter_config.json
BASE_LINK = "mmalign_base.json"
# beside a merged model's weights: the base and the adapter folders merged into it
MERGED_RECORD = "mmalign_merged.json"
_WARNED: set[tuple[str, str, str]] = set()  # (root, model, adapter) warned about in this process
# fingerprints computed in this process, by folder and its weight files' sizes and times
_PRINTS: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}
# an adapter folder and its fingerprint where a record holds one (`MERGED_RECORD`), else None
Held = tuple[str, str | None]
ROOT_WHY = "the base its adapter_config.json records"  # how a chain's root is known, usually


def resolve_model(name_or_path: str | Path) -> str:
    """`toy:vlm` names the shipped toy-vlm; anything else is a folder or hub id as given."""
    if str(name_or_path) == "toy:vlm":
        from ..toy.paths import model_path

        return str(model_path("vlm"))
    return str(name_or_path)


def is_adapter(folder: str) -> bool:
    return bool(folder) and (Path(folder) / "adapter_config.json").is_file()


def fingerprint(folder: str | Path) -> str:
    """The identity of an adapter folder's weights: a sha256 of its weight files' bytes and of
    its `adapter_config.json` less the base path (the rank, alpha and targets shape what the
    weights do; the base path changes with where a copy lives). A byte-identical copy has the
    same one; retraining into the folder changes it. LoRA files are small, and each folder is
    hashed once per process while its files stay as they are (`weights.weight_files`)."""
    files = weight_files(folder)
    key = (str(Path(folder).resolve()), tuple(files))
    if key not in _PRINTS:
        digest = hashlib.sha256()
        for name, _, _ in files:
            digest.update(name.encode() + b"\0")
            with open(Path(folder) / name, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        config = json.loads((Path(folder) / "adapter_config.json").read_text())
        config.pop("base_model_name_or_path", None)
        digest.update(json.dumps(config, sort_keys=True).encode())
        _PRINTS[key] = digest.hexdigest()
    return _PRINTS[key]


def write_base_link(adapter: str | Path, start: str | Path) -> None:
    """Record `start` (a local adapter folder) relative to the adapter folder `adapter`, with
    its `fingerprint`."""
    rel = os.path.relpath(Path(start).resolve(), Path(adapter).resolve())
    link = {"relative": Path(rel).as_posix(), "fingerprint": fingerprint(start)}
    (Path(adapter) / BASE_LINK).write_text(json.dumps(link) + "\n")


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object mmalign wrote; {} where there is none (or it is not one)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _recorded_base(here: Path) -> str:
    """`base_model_name_or_path` as PEFT wrote it (a hub id, or a path as the training run
    spelled it; a relative one that is no folder from here is read against the adapter
    folder); "" where it names none."""
    base = json.loads((here / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        return ""
    base = resolve_model(base)
    path = Path(base).expanduser()
    if not path.is_absolute() and not path.exists() and (here / path).exists():
        return str((here / path).resolve())
    return base


def base_of(folder: str) -> str:
    """The model or adapter folder that adapter folder `folder` was trained on: `BASE_LINK`'s
    folder where it exists; else `base_model_name_or_path` (`_recorded_base`). Where the link
    holds a fingerprint, the first of the two that holds that adapter (the DPO run copied
    alone next to another SFT run: the absolute path); neither, where one of them is another
    adapter, is refused naming it."""
    here = Path(folder)
    link = _read_json(here / BASE_LINK)
    rel, want = link.get("relative"), link.get("fingerprint")
    linked = here / rel if isinstance(rel, str) and rel else None
    base = _recorded_base(here)
    places = [str(linked.resolve())] if linked is not None and linked.is_dir() else []
    places += [base] if base else []
    if not want:  # no link, or one written before links held fingerprints
        return places[0] if places else ""
    for place in places:
        if is_adapter(place) and fingerprint(place) == want:
            return place
    others = [place for place in places if is_adapter(place)]
    if not others:  # the start folder is gone: loading its base says so, naming it
        return base
    raise InputError(
        f"{folder} was trained on another adapter than {' or '.join(others)} (the folder its "
        f"{BASE_LINK} leads to, and its adapter_config.json's base): their weights differ from "
        "the start adapter's it recorded; put a copy of the adapter it was trained from where "
        "its link leads, or point base_model_name_or_path at one"
    )


def write_merged_record(folder: str | Path, base: str, adapters: Sequence[str | Path]) -> None:
    """Record in a merged model's folder the model it was merged from and the adapter
    folders merged into it (innermost first), with their fingerprints."""
    held = [{"path": str(Path(a).resolve()), "fingerprint": fingerprint(a)} for a in adapters]
    record = {"base": base, "adapters": held}
    (Path(folder) / MERGED_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def merged_record(source: str) -> tuple[str, list[Held]] | None:
    """(the plain model at the bottom, [(adapter folder, fingerprint)] innermost first)
    merged into the model folder `source`, where it holds a `MERGED_RECORD`; else None. A
    base that is a merged folder in turn (a run with `vlm.merge: true` started from another's
    merged/) gives its own adapters first and its base."""
    base, held, seen = source, [], set()
    while base and looks_local(base) and len(seen) <= MAX_ADAPTER_CHAIN:
        record = _read_json(Path(base).expanduser() / MERGED_RECORD)
        adapters = record.get("adapters")
        if not isinstance(adapters, list) or not adapters or base in seen:
            break
        seen.add(base)
        held = [(str(a.get("path", "")), a.get("fingerprint")) for a in adapters
                if isinstance(a, dict)] + held  # fmt: skip
        base = str(record.get("base") or "")
    return (base, held) if seen else None


def _holds(held: Held) -> bool:
    """Whether the folder of `held` is there and holds the adapter recorded."""
    folder, recorded = held
    return is_adapter(folder) and (recorded is None or fingerprint(folder) == recorded)


def follow(source: str, name: str | Path) -> tuple[str, list[str]]:
    """(the model at the root, the adapter folders from it up to `source`, innermost first):
    `source` itself where it is no adapter folder. `name`: what the user gave, for messages."""
    chain: list[str] = []
    seen: set[Path] = set()
    while is_adapter(source):
        real = Path(source).resolve()
        if real in seen or len(chain) > MAX_ADAPTER_CHAIN:
            raise ValueError(f"{name}: the adapters' base_model_name_or_path loop")
        seen.add(real)
        chain.insert(0, source)
        source = base_of(source)
    return source, chain


def _same_place(a: str, b: str) -> bool | None:
    """Whether two model names are the same model: None where that cannot be told from the
    names (one a local folder, the other a hub id; or one unknown)."""
    if not a or not b:
        return None
    local_a, local_b = looks_local(a), looks_local(b)
    if local_a and local_b:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    if not local_a and not local_b:
        return a == b
    return None


def _loadable(name: str) -> bool:
    """A hub id, or a local folder holding a model (its config.json)."""
    return not looks_local(name) or (Path(name).expanduser() / "config.json").is_file()


def check_root(root: str, source: str, adapter: str | Path, adapter_key: str, key: str, *,
               starts: Sequence[str] = (), merged_from: str = "",
               why: str = ROOT_WHY) -> None:  # fmt: skip
    """Warn where the model at the root of the given adapter's chain is clearly not `source`,
    the model the user named (both local folders, or both hub ids, and different): the
    adapter loads on `source` as asked (a moved or copied base is the same model under
    another path), but its weights were trained on `root`. `merged_from`: the base that
    `source`, a merged model, was merged from (`merged_record`), compared in its place.
    `why`: how `root` is known, for the warning.

    `starts`: the start adapters the given one was trained on that are stacked on `source`
    (MODEL holds none of them). On a root that is clearly another model, which a merged
    folder written without a `MERGED_RECORD` is, they may be applied a second time: refused
    where `root` can be loaded (the adapter alone loads it, starts and all: nothing is lost),
    else warned about, naming them."""
    if _same_place(root, merged_from or source) is not False:
        return
    if starts and _loadable(root):
        because = "a merged/ folder written before mmalign recorded what it holds" \
            if why == ROOT_WHY else why  # fmt: skip
        raise InputError(
            f"{adapter_key} {adapter} was trained on {root} with the adapter(s) "
            f"{', '.join(starts)} merged in, but {key} is {source}: they would be applied "
            f"again on {source} if it holds them already ({because}); give {adapter} alone "
            f"as the model (it loads "
            f"{root} with them), or {root} as {key}"
        )
    if (root, source, str(adapter)) in _WARNED:
        return
    _WARNED.add((root, source, str(adapter)))  # once: a VLMRef and its load both check
    stacking = f", with its start adapter(s) {', '.join(starts)} merged in below it" if starts \
        else ""  # fmt: skip
    warnings.warn(
        f"{adapter_key} {adapter} was trained on {root} ({why}), but {key} is {source}: it "
        f"is applied on {source} as given{stacking}; give {adapter} alone as the model to "
        f"load it on {root}",
        stacklevel=5,
    )


def _same_adapter(mine: Held, theirs: Held) -> bool:
    """Whether MODEL's adapter `mine` is the start adapter `theirs` (each (folder, its
    recorded fingerprint or None)): by the recorded fingerprints (the weights merged in) where
    there are, else the same folder or a copy of it (`fingerprint`)."""
    (folder, recorded), (their_folder, their_print) = mine, theirs
    if recorded is None and their_print is None:
        if Path(folder).resolve() == Path(their_folder).resolve():
            return True
    if recorded is None:
        recorded = fingerprint(folder) if is_adapter(folder) else None
    if their_print is None:
        their_print = fingerprint(their_folder) if is_adapter(their_folder) else None
    return recorded is not None and recorded == their_print


def stacked(chain: Sequence[str], start: Sequence[Held], adapter: str | Path, adapter_key: str,
            name: str | Path, key: str, held: Sequence[Held] = (),
            trained: str = "") -> list[str]:  # fmt: skip
    """The adapters to apply below the given `adapter`: MODEL's own (`chain`) and the start
    adapters the given one was trained on (`start`, innermost first, each (folder,
    fingerprint or None)) that MODEL lacks. `held`: those merged into MODEL already
    ((folder, fingerprint), `merged_record`), below `chain` and never applied again. MODEL's
    adapters must be the first of those starts: an adapter trained from an SFT adapter on
    another adapter is not the model it was trained on, and is refused (`trained`: what it
    was trained on, for the message). An adapter trained on a plain model keeps going on
    MODEL's adapters, as the user asks."""
    if not start:
        return list(chain)
    mine = [*held, *((a, None) for a in chain)]
    if len(mine) <= len(start) and all(map(_same_adapter, mine, start)):
        return [*chain, *(folder for folder, _ in start[len(mine) :])]
    names = [*(f"{a} (merged in)" for a, _ in held), *chain]
    trained = trained or (f"from the adapter {start[-1][0]} (its adapter_config.json's base; "
                          f"{len(start)} adapter(s) down to the model)")  # fmt: skip
    raise InputError(
        f"{adapter_key} {adapter} was trained {trained}, but {key} {name} holds the "
        f"adapter(s) {', '.join(names)}, which it was not trained on: give {adapter} alone as "
        f"the model (it loads its start adapters itself), or their base model as {key}"
    )


def starts_below(source: str, chain: Sequence[str], top: str, adapter: str | Path,
                 adapter_key: str, name: str | Path, key: str) -> list[str]:  # fmt: skip
    """The adapters `load_vlm` applies below the adapter folder `top` (given as `adapter`) on
    MODEL (`name`: the model `source` with its own adapters `chain`): `chain` and the start
    adapters of `top` that MODEL lacks (`stacked`), after `check_root`.

    Where `top`'s chain starts from a merged folder, the adapters its `MERGED_RECORD` names
    count as start adapters below the others, on the record's base: given on the plain base
    they are applied between (from their folders: the weights `load_vlm(top)` gives), given
    on the merged folder or another holding them they are not. Where one MODEL lacks is not
    where the record says (moved, deleted, retrained), the merged folder stays the root, and
    the warning says what it holds."""
    root, start = follow(base_of(top), adapter)
    merged_from, held = merged_record(source) or ("", [])
    bottom, merged_in = merged_record(root) or (root, [])
    starts: list[Held] = [(a, None) for a in start]
    why = ROOT_WHY
    if merged_in:
        names = ", ".join(a for a, _ in merged_in)
        on = f" and the adapter(s) {', '.join(start)} on it" if start else ""
        trained = f"on {root}, which holds {bottom} with the adapter(s) {names} merged in{on}"
        below = stacked(chain, [*merged_in, *starts], adapter, adapter_key, name, key, held,
                        trained)  # fmt: skip
        applied = below[len(chain) :]
        gone = [a for a, made in merged_in if a in applied and not _holds((a, made))]
        # MODEL, with no record of its own, may be the merged folder copied (re-saved, or on
        # the hub) rather than its base: stacked only where MODEL is known to be the base
        if not gone and any(a in applied for a, _ in merged_in):
            if _same_place(bottom, merged_from or source) is None:
                _warn_unsure(root, bottom, names, source, adapter, adapter_key, key)
                return stacked(chain, starts, adapter, adapter_key, name, key, held)
        if not gone:
            why = (f"{root}, its adapter_config.json's base, holds it with the adapter(s) "
                   f"{names} merged in, as its {MERGED_RECORD} records")  # fmt: skip
            check_root(bottom, source, adapter, adapter_key, key, starts=below[len(chain) :],
                       merged_from=merged_from, why=why)  # fmt: skip
            return below
        # their weights are not there to apply: the merged folder stays the root (warned)
        why += (
            f"; it holds {bottom} with the adapter(s) {names} merged in, as its "
            f"{MERGED_RECORD} records, and {', '.join(gone)} is no longer there as it was"
        )
        bottom = root
    below = stacked(chain, starts, adapter, adapter_key, name, key, held)
    check_root(bottom, source, adapter, adapter_key, key, starts=below[len(chain) :],
               merged_from=merged_from, why=why)  # fmt: skip
    return below


def _warn_unsure(root: str, bottom: str, names: str, source: str, adapter: str | Path,
                 adapter_key: str, key: str) -> None:  # fmt: skip
    """Warn (once) that `adapter`, trained from the merged folder `root` (`bottom` with the
    adapters `names` merged in), goes on MODEL `source` without them: whether `source` is
    `bottom` or a copy of `root` cannot be told from their names, and applied on a copy they
    would count twice."""
    if (root, source, str(adapter)) in _WARNED:
        return
    _WARNED.add((root, source, str(adapter)))
    warnings.warn(
        f"{adapter_key} {adapter} was trained on {root}, which holds {bottom} with the "
        f"adapter(s) {names} merged in ({MERGED_RECORD}); whether {key} {source} is {bottom} "
        f"or holds them already cannot be told from their names, so {adapter} is applied on "
        f"{source} without them. Give {adapter} alone as the model to load it on {root}, or "
        f"{bottom} as {key} to have them applied below it",
        stacklevel=5,
    )


def held_already(source: str, chain: Sequence[str], top: str) -> str | None:
    """Where MODEL (`source` with its own adapters `chain`) already holds the adapter folder
    `top` given on top of it: the folder of `chain`, or the one its `MERGED_RECORD` names,
    with the same `fingerprint` (a copy counts as the adapter); else None. Applying it again
    would add its LoRA delta twice, with no error (`mmalign eval vlm RUN --adapter
    RUN/adapter` scored another model than RUN)."""
    mine = fingerprint(top)
    for folder in chain:
        if is_adapter(folder) and fingerprint(folder) == mine:
            return folder
    for folder, recorded in (merged_record(source) or ("", []))[1]:
        if recorded is None and is_adapter(folder):
            recorded = fingerprint(folder)
        if recorded == mine:
            return f"{folder} (merged into {source})"
    return None
