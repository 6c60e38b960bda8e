"""Which files a reward scorer loads, checked before anything loads, and how a user gives them.

A model scorer reads its weights from a local folder or file, or a hub id (`path`), and some
read more: PickScore its processor (`processor`), ImageReward its BERT tokenizer (`tokenizer`)
and text config (`med_config`), HPSv2 an OpenCLIP architecture (`arch`), the aesthetic
predictor its CLIP backbone (`clip`). Each scorer module's `files(...)` lists them as
`ScorerFile`s from the scorer's own keyword arguments, without loading anything, and
`require_files` checks them all at once as mmalign/hub.py checks a model: a local path that
does not exist, a folder without the checkpoint, a hub id not in the local cache while offline
(`HF_HUB_OFFLINE=1`) or while the hub cannot be reached (`hub.hub_reachable`: one quick
request, as `mmalign train` asks it, not a loader's minute of retries). `mmalign eval winrate`
runs the check before any model or image, `eval accuracy` and `data smooth` before the data
is read, and each scorer before it loads.

One spelling gives them, in `eval winrate`, `eval accuracy --scorer` and `data smooth`
(`--scorer-path`, repeatable) and in a recipe's `data.smooth.scorer_path` (a list of the same
strings): `NAME=PATH` for a scorer's weights (`get_scorer`'s `path=`), `NAME:OPTION=PATH` for
another of its files (`pickscore:processor=DIR`, `imagereward:tokenizer=DIR`). A PickScore
folder holding the processor's files beside the model's needs no `processor`. `eval accuracy
--model` loads no scorer and refuses the option; `eval dense` has none (a dense head's folder
holds everything it loads).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import InputError

# get_scorer's keyword arguments that name files, per registered scorer (`path` first)
FILE_OPTIONS: dict[str, tuple[str, ...]] = {
    "pickscore": ("path", "processor"),
    "hpsv2": ("path", "arch"),
    "imagereward": ("path", "tokenizer", "med_config"),
    "clip": ("path",),
    "aesthetic": ("path", "clip"),
}
CLI = "--scorer-path"  # where a command line gives the files
HELP = (
    "a scorer's local files (repeatable): NAME=PATH for its weights, e.g. "
    "pickscore=/models/PickScore_v1 (a folder holding the processor's files too needs nothing "
    "more); NAME:OPTION=PATH for another of its files, e.g. pickscore:processor=DIR, "
    "imagereward:tokenizer=DIR"
)


@dataclass(frozen=True)
class ScorerFile:
    """One input a scorer loads. `source`: a local path or hub id, as the scorer will load it;
    `in_folder`: for a checkpoint, the file names looked for in a local folder (one must be
    there); `hub_file`: a file the hub repo must hold (cached, when offline); `hub`: False for
    what can only be a local path (a config JSON, a dense head); `give`: the placeholder of
    the option's value in messages; `note`: another way out, named after the option;
    `shown`: how messages name a hub `source` (`HPS_v2.1_compressed.pt from xswu/HPSv2`)."""

    scorer: str
    option: str
    what: str
    source: str
    in_folder: tuple[str, ...] = ()
    hub_file: str | None = None
    hub: bool = True
    give: str = "DIR"
    note: str = ""
    where: str = CLI  # or "data.smooth.scorer_path" for a recipe
    shown: str = ""  # how messages name a hub `source` (default: itself)

    @property
    def option_text(self) -> str:
        """How the user gives this file: `--scorer-path pickscore:processor=DIR`."""
        target = self.scorer if self.option == "path" else f"{self.scorer}:{self.option}"
        sep = ": [" if not self.where.startswith("--") else " "
        end = "]" if sep == ": [" else ""
        return f"{self.where}{sep}{target}={self.give}{end}"

    @property
    def key(self) -> str:
        """What names this file in a loader's hub error (`hub.hub_errors`)."""
        return f"{self.scorer}'s {self.what} ({self.option_text})"


def problem(f: ScorerFile) -> str | None:
    """Why `f` cannot be loaded as it stands (one line naming it and what to do), or None."""
    from ..hub import Need, download_hint, is_cached, is_repo_id, offline

    path = Path(f.source).expanduser()
    label = f"{f.scorer}'s {f.what}"
    if path.is_dir() and f.in_folder and not any((path / n).is_file() for n in f.in_folder):
        return f"{label}: the folder {f.source} holds no {' or '.join(f.in_folder)}"
    if path.exists():
        return None  # its contents are the loader's to check
    if not f.hub or not is_repo_id(f.source):
        return f"{label}: {f.source} does not exist (no such local folder or file)"
    if offline() and not is_cached(Need(f.source, label, file=f.hub_file)):
        return (
            f"{label} {f.shown or f.source} is not in the local cache (offline): download it with "
            f"{download_hint(f.source)} where there is network, or give a local copy with "
            f"{f.option_text}{f.note}"
        )
    return None  # cached, or online: the loader downloads it (`hub_errors` words a failure)


def _unreachable(f: ScorerFile) -> str:
    from ..hub import download_hint

    return (
        f"{f.scorer}'s {f.what} {f.shown or f.source} could not be downloaded (no connection "
        f"to the hub): download it with {download_hint(f.source)} where there is network, or "
        f"give a local copy with {f.option_text}{f.note}"
    )


def file_problems(files: Iterable[ScorerFile]) -> list[str]:
    """`problem` of each of `files`, in order, each once; online, the hub ids not in the cache
    are named too when the hub cannot be reached (`hub.hub_reachable`: one quick request,
    asked only if there are any), as `hub.problems` names a model's, instead of each loader
    retrying a dead connection (about 50 s) after the images are drawn."""
    from ..hub import Need, hub_reachable, is_cached, looks_local, offline

    files = list(files)
    found = [problem(f) for f in files]
    uncached = [
        i for i, (f, p) in enumerate(zip(files, found, strict=True))
        if p is None and f.hub and not offline() and not looks_local(f.source)
        and not is_cached(Need(f.source, f.key, file=f.hub_file))
    ]  # fmt: skip
    if uncached and not hub_reachable():
        for i in uncached:
            found[i] = _unreachable(files[i])
    return list(dict.fromkeys(p for p in found if p is not None))


def require_files(files: Iterable[ScorerFile]) -> None:
    """Raise one `InputError` listing every file in `files` that cannot be loaded
    (`file_problems`: offline, or online with a hub that cannot be reached, every hub id not
    in the local cache)."""
    problems = file_problems(files)
    if problems:
        raise InputError("\n".join(problems))


def scorer_files(name: str, *, where: str = CLI, **kwargs: Any) -> list[ScorerFile]:
    """The files scorer `name` would load with `get_scorer(name, **kwargs)` (none for a toy
    scorer), named as the user named the scorer. An unknown scorer or argument (an HPSv2
    version) raises here, as it would when the scorer loads."""
    import importlib

    from . import SCORERS, split_name

    base, argument = split_name(name)
    module = getattr(SCORERS[base], "files_module", None)
    if module is None:
        return []  # programmatic: no weights
    files = importlib.import_module(f"{__package__}.{module}").files
    found = files(argument, **kwargs) if argument is not None else files(**kwargs)
    return [dataclasses.replace(f, scorer=name, where=where) for f in found]


def require_scorer_files(kwargs: Mapping[str, Mapping[str, Any]], *, where: str = CLI) -> None:
    """`require_files` over every scorer of `kwargs` ({name: get_scorer keyword arguments}):
    one error listing every file that is missing, before any of them loads."""
    found: list[ScorerFile] = []
    for name, kw in kwargs.items():
        found += scorer_files(name, where=where, **kw)
    require_files(found)


def canonical(name: str) -> str:
    """`name` with its default argument spelled out (`hpsv2` -> `hpsv2:v2.1`), so the two
    spellings of one scorer are matched."""
    from . import SCORERS, split_name

    try:
        base, argument = split_name(name)
    except InputError:
        return name
    if argument is None:
        variants = getattr(SCORERS[base], "variants", ())
        argument = variants[0] if variants else None
    return base if argument is None else f"{base}:{argument}"


def _find(target: str, names: Sequence[str]) -> str | None:
    if target in names:
        return target
    same = [n for n in names if canonical(n) == canonical(target)]
    return same[0] if same else None


def parse_scorer_paths(
    items: Iterable[str] | None, names: Sequence[str], flag: str = CLI
) -> dict[str, dict[str, str]]:
    """{scorer name: {keyword: path}} from `NAME=PATH` / `NAME:OPTION=PATH` strings, NAME one
    of `names` (or another spelling of one: `hpsv2` for `hpsv2:v2.1`)."""
    from ..suggest import did_you_mean
    from . import split_name

    out: dict[str, dict[str, str]] = {}
    for item in items or []:
        target, sep, value = str(item).partition("=")
        if not sep or not target or not value:
            raise InputError(
                f"{flag} {item!r}: give NAME=PATH (a scorer's weights) or NAME:OPTION=PATH "
                "(another of its files), e.g. pickscore=/models/PickScore_v1 or "
                "pickscore:processor=/models/CLIP-ViT-H-14"
            )
        name, option = _find(target, names), "path"
        if name is None and ":" in target:
            head, option = target.rsplit(":", 1)
            name = _find(head, names)
        if name is None:
            raise InputError(f"{flag} {item}: {target} is not among the scorers {list(names)}")
        base = split_name(name)[0]
        options = FILE_OPTIONS.get(base)
        if options is None:
            what = "its checkpoint is in its name" if base == "dense" else "it loads no files"
            raise InputError(f"{flag} {item}: {name} takes no {flag} ({what})")
        if option not in options:
            raise InputError(
                f"{flag} {item}: {name} has no file option '{option}'; "
                f"{did_you_mean(option, options)}"
            )
        out.setdefault(name, {})[option] = value
    return out
