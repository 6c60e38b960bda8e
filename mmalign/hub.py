"""Where a model, scorer or data set named by the user stands, checked before any heavy work.

A name is a local folder or file, or a Hugging Face hub id. `problem` tells, without loading
anything, whether it can be used: a local path that does not exist, or a hub id that is not in
the local cache while the hub is offline (`HF_HUB_OFFLINE=1`), is reported with what to do.
`require` raises one `InputError` naming every such input at once, so an SDXL recipe reports
its pipeline, its VAE and its data together; online, when the hub cannot be reached at all
(`hub_reachable`, one quick request), every id that is not cached is named the same way, at
once, instead of each loader retrying a dead connection in turn. `hub_errors` turns the errors
a loader meets online (no network, a gated or missing repo, a missing file) into the same kind
of message.

A name that looks local (`./`, `../`, `/`, `~`, or one that exists) is never sent to the hub.
A relative name that is also spelled like a hub id (`data/realign`) is both: where neither is
found, the message says so (no such folder, and no such id), not just the hub half.

The cache is located from the environment at call time (HF_HUB_CACHE, HF_HOME, ...), not from
`huggingface_hub.constants`, which are read once at import: a test or a caller that points the
cache elsewhere afterwards is seen.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import InputError

RepoType = Literal["model", "dataset"]
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Need:
    """An input a command needs: `name` as the user gave it, `key` where they gave it (a
    config key or a flag, used in messages), and for a hub id a `file` that must be cached
    (e.g. `model_index.json` for a pipeline) and the `revision`."""

    name: str
    key: str
    repo_type: RepoType = "model"
    file: str | None = None
    revision: str | None = None


def offline() -> bool:
    """Whether the hub must not be contacted (HF_HUB_OFFLINE, or the datasets/transformers
    variants of it)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) and "HF_HUB_OFFLINE" not in os.environ


def _hf_home() -> Path:
    if "HF_HOME" in os.environ:
        return Path(os.environ["HF_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    return Path(xdg).expanduser() / "huggingface"


def hub_cache() -> Path:
    """The hub download cache (`models--org--name`, `datasets--org--name` folders)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if "HF_HOME" in os.environ:
        return _hf_home() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)  # the library's own default (or a caller's setting)


def datasets_cache() -> Path:
    """The `datasets` library's prepared-data cache (`org___name` folders)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    return _hf_home() / "datasets"


def is_repo_id(name: str) -> bool:
    """Whether `name` is spelled like a hub id (`org/name` or `name`)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def looks_local(name: str) -> bool:
    """Whether `name` can only mean a local path: it exists, starts with `./`, `../`, `/` or
    `~`, or is not spelled like a hub id. Such a name is never looked up on the hub."""
    if name.startswith("toy:"):
        return False
    return Path(name).expanduser().exists() or not is_repo_id(name)


# first folders of the relative paths mmalign's docs and recipes write (`runs/NAME`, the
# default output_dir's folder; `data/NAME`): a name under one was meant as a local path
LOCAL_ROOTS = ("runs", "data")


def _also_local(need: Need) -> bool:
    """Whether a hub-id-shaped `need` that does not exist locally was as likely meant as a
    relative folder: its first folder exists here (`runs/nope` beside `runs/`), or is one of
    `LOCAL_ROOTS`."""
    if "/" not in need.name or Path(need.name).expanduser().exists():
        return False
    first = need.name.split("/", 1)[0]
    return first in LOCAL_ROOTS or Path(first).is_dir()


def _neither(need: Need) -> str:
    """The local half of a message about a name that is neither a folder here nor on the hub."""
    return f"no local folder of that name (relative to {Path.cwd()}), and "


def missing_local(name: str) -> bool:
    """Whether `name` can only be a local path (not spelled like a hub id) and does not exist.
    `toy:...` names are not paths."""
    if name.startswith("toy:") or Path(name).expanduser().exists():
        return False
    return not is_repo_id(name)


def _repo_folder(name: str, repo_type: RepoType) -> Path:
    return hub_cache() / f"{repo_type}s--{name.replace('/', '--')}"


def is_cached(need: Need) -> bool:
    """Whether the hub id is in the local cache (with `need.file`, when one is named)."""
    folder = _repo_folder(need.name, need.repo_type)
    if need.file is not None:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(
            need.name, need.file, cache_dir=hub_cache(), revision=need.revision,
            repo_type=need.repo_type,
        )  # fmt: skip
        if isinstance(found, str):
            return True
    elif (folder / "snapshots").is_dir() and any((folder / "snapshots").iterdir()):
        return True
    if need.repo_type == "dataset":  # prepared by `datasets` before, perhaps under another cache
        return (datasets_cache() / need.name.replace("/", "___")).is_dir()
    return False


def download_hint(name: str, repo_type: RepoType = "model") -> str:
    flag = " --repo-type dataset" if repo_type == "dataset" else ""
    return f"`hf download {name}{flag}`"


def problem(need: Need) -> str | None:
    """Why `need` cannot be used as it stands (one line naming it and what to do), or None."""
    if Path(need.name).expanduser().exists():
        return None  # a local folder or file: its contents are the loader's to check
    from .toy_names import TOY

    if need.name.startswith("toy:") and need.name not in TOY:  # a typo, not a path: name the toys
        from .suggest import did_you_mean

        return f"{need.key}: no toy model {need.name!r}; {did_you_mean(need.name, TOY)}"
    if not is_repo_id(need.name):
        return f"{need.key}: {need.name} does not exist (no such local folder or file)"
    if offline() and not is_cached(need):
        hint = f"{download_hint(need.name, need.repo_type)} where there is network"
        if _also_local(need):
            return (
                f"{need.key}: {need.name}: {_neither(need)}not a hub {need.repo_type} in the "
                f"local cache (offline): if it is one, download it with {hint}; else set "
                f"{need.key} to the folder's path"
            )
        return (
            f"{need.key}: {need.name} is not in the local cache (offline): download it with "
            f"{hint}, or set {need.key} to a local folder"
        )
    return None  # cached, or online: the loader downloads it (`hub_errors` words a failure)


def _unreachable(need: Need) -> str:
    where, local = f"{need.key}: {need.name}", f"or set {need.key} to a local folder"
    if _also_local(need):
        where += f": {_neither(need)}it"
    return _no_network(where, need.name, local, need.repo_type)


_REACHABLE: dict[str, bool] = {}  # endpoint -> whether it answered, once per process


def _probe(endpoint: str, timeout: float) -> bool:
    """One request to the hub, no retries: False only when no connection could be made (any
    answer, an error status included, means the hub is there for the loaders to ask)."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=timeout)
    except Exception as err:  # httpx or requests, as huggingface_hub's session is
        name = type(err).__name__
        return not (isinstance(err, OSError) or "Connect" in name or "Timeout" in name)
    return True


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the hub (HF_ENDPOINT) answers, asked once per process. The loaders retry a dead
    connection for about 20 s each, one id at a time; asking once first lets `require` name
    every uncached id together, at once, as offline mode does."""
    from huggingface_hub import constants

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    if endpoint not in _REACHABLE:
        _REACHABLE[endpoint] = _probe(endpoint, timeout)
    return _REACHABLE[endpoint]


def problems(needs: Sequence[Need]) -> list[str]:
    """Why each need cannot be used (`problem`), in order; online, ids that are not cached are
    named too when the hub cannot be reached (`hub_reachable`, asked only if there are any)."""
    found: list[str | None] = [problem(n) for n in needs]
    uncached = [
        i for i, (n, p) in enumerate(zip(needs, found, strict=True))
        if p is None and not offline() and not looks_local(n.name) and not is_cached(n)
    ]  # fmt: skip
    if uncached and not hub_reachable():
        for i in uncached:
            found[i] = _unreachable(needs[i])
    return [p for p in found if p is not None]


def require(needs: Sequence[Need]) -> None:
    """Raise one `InputError` listing every need that cannot be used (one line each)."""
    found = problems(needs)
    if found:
        raise InputError("\n".join(found))


def require_one(name: str, key: str, **fields: str | None) -> str:
    """`require([Need(name, key, ...)])`, returning `name` for the loader."""
    require([Need(str(name), key, **fields)])  # type: ignore[arg-type]
    return str(name)


# ---------------------------------------------------------------- errors met while loading


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def hub_error_message(
    err: BaseException, name: str, key: str, repo_type: RepoType = "model"
) -> str | None:
    """A one-line message for a hub or network failure met loading `name`, None for others.
    `repo_type` goes into the download hint: for a data set, `hf download ID` alone fetches
    (or fails to find) a model repo of that name.

    The whole chain of causes is searched for the hub's own errors before a loader's wording
    of them is read: diffusers words a connection that failed as "does not appear to have a
    file named config.json", with the hub's `LocalEntryNotFoundError` as its cause."""
    need = Need(name, key, repo_type)
    where = f"{key}: {name}"
    if _also_local(need):  # `runs/nope`, `data/x`: say it is no folder here either
        where += f": {_neither(need)}it"
    local = f"or set {key} to a local folder"
    chain = list(_chain(err))
    for e in chain:
        message = _hub_failure(e, where, name, local, repo_type)
        if message is not None:
            return message
    for e in chain:
        text = str(e)
        if isinstance(e, OSError) and "does not appear to have a file named" in text:
            return f"{key}: {name}: {text.splitlines()[0]}"
    return None


def _hub_failure(
    e: BaseException, where: str, name: str, local: str, repo_type: RepoType
) -> str | None:
    from huggingface_hub import errors as hub

    if isinstance(e, hub.GatedRepoError):
        return (
            f"{where} is gated: accept its terms on https://huggingface.co/{name} and log "
            f"in (`hf auth login`), {local}"
        )
    if isinstance(e, hub.RevisionNotFoundError):
        return f"{where} has no such revision on the hub (the revision asked for)"
    if isinstance(e, hub.RepositoryNotFoundError):
        return (
            f"{where} does not exist on the hub (or is private: log in with "
            f"`hf auth login`); check the id, {local}"
        )
    if isinstance(e, hub.RemoteEntryNotFoundError):
        return f"{where} has no file {getattr(e, 'filename', '') or 'the loader asked for'}"
    if isinstance(e, hub.OfflineModeIsEnabled | hub.LocalEntryNotFoundError):
        if offline():
            return (
                f"{where} is not (completely) in the local cache (offline): download it "
                f"with {download_hint(name, repo_type)} where there is network, {local}"
            )
        return _no_network(where, name, local, repo_type)
    if type(e).__name__ in ("ConnectError", "ConnectionError", "ConnectTimeout", "Timeout"):
        return _no_network(where, name, local, repo_type)
    if type(e).__name__ == "DatasetNotFoundError":
        return (
            f"{where} is no data set on the hub, or not in the local cache (offline); "
            f"download it with {download_hint(name, 'dataset')}, {local}"
        )
    if isinstance(e, OSError) and "couldn't connect" in str(e).lower():
        return _no_network(where, name, local, repo_type)
    return None


def _no_network(where: str, name: str, local: str, repo_type: RepoType = "model") -> str:
    return (
        f"{where} could not be downloaded (no connection to the hub): download it with "
        f"{download_hint(name, repo_type)} where there is network, {local}"
    )


@contextmanager
def hub_errors(name: str | Path, key: str, repo_type: RepoType = "model") -> Iterator[None]:
    """Around a loader call: a hub or network failure becomes an `InputError` naming `key`
    (`repo_type="dataset"` for a data set, so the download hint fetches the right repo)."""
    try:
        yield
    except InputError:
        raise
    except Exception as err:
        message = hub_error_message(err, str(name), key, repo_type)
        if message is None:
            raise
        raise InputError(message) from err
