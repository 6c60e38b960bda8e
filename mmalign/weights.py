"""Cheap identities of weight files, for cache keys that must change when a model does.

A cache built from a model's outputs (toy datasets sampled from toy-sd, a VLM's blind answers
or reference scores) is only valid for the weights that made it. Hashing gigabytes of weights
on every run is too slow, so a key is each weight file's relative path, size and modification
time: rebuilding or replacing a model changes it, reading it does not. A hub model is keyed by
the commit of its cached snapshot (`hub_commit`).
"""

from __future__ import annotations

from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def weight_files(folder: str | Path | None, recursive: bool = False) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns) of each weight file in `folder`, sorted; [] if
    `folder` is not a local folder (a hub id). `recursive` covers a diffusers pipeline's
    component subfolders."""
    if folder is None or not Path(folder).is_dir():
        return []
    root = Path(folder)
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        (f.relative_to(root).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
        for f in found
        if f.is_file() and f.suffix in WEIGHT_SUFFIXES
    )


def hub_commit(repo_id: str, revision: str | None = None, repo_type: str = "model") -> str | None:
    """The commit of the cached snapshot of hub repo `repo_id` at `revision` (default `main`:
    the commit `refs/main` points at, which a download of a newer revision moves), read from
    the local cache only (`models--org--name/snapshots/<commit>`), never the network; None
    when `repo_id` is a local path, not spelled as a hub id, or not cached. A hub model has no
    local weight files to key on: its snapshot commit changes when its weights do."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from .hub import hub_cache, is_repo_id

    if Path(repo_id).expanduser().exists() or not is_repo_id(repo_id):
        return None
    try:
        snapshot = snapshot_download(
            repo_id, revision=revision, repo_type=repo_type, cache_dir=hub_cache(),
            local_files_only=True,
        )  # fmt: skip
    except (LocalEntryNotFoundError, ValueError):  # not cached; a malformed revision
        return None
    return Path(snapshot).name
