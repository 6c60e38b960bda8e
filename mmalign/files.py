"""File permissions of the safetensors files mmalign writes.

safetensors 0.8 (`save_file`, and what builds on it: diffusers' `save_lora_weights`, PEFT's
and transformers' `save_pretrained`) writes each file through a temporary file created 0600
and renamed (safetensors/safetensors#782), so the file is readable by its owner only whatever
the umask: other users of a shared run or cache folder (a team server, a Docker image run as
another user) cannot read it. `make_readable` gives such files the mode any new file gets.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Sequence
from pathlib import Path

OWNER_ONLY = 0o600  # what safetensors 0.8 leaves


def current_umask() -> int:
    """This process's umask: from /proc/self/status where the kernel reports it (no change to
    the process state, so safe beside other threads), else set and restored at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0)
    os.umask(old)
    return old


def umask_mode() -> int:
    """The permissions a new regular file gets under the current umask (0o644 under 022)."""
    return 0o666 & ~current_umask()


def make_readable(path: str | Path) -> None:
    """Give `path` (a file), or every `*.safetensors` under `path` (a folder), the umask's
    permissions where the file is owner-only (0600, as safetensors 0.8 leaves it). Other
    modes are left alone (a file chmodded on purpose, one a fixed safetensors wrote), and so
    are links and files of other owners."""
    path = Path(path)
    if path.is_dir():
        files = [p for p in path.rglob("*.safetensors") if not p.is_symlink()]
    else:
        files = [path]
    mode = umask_mode()
    uid = os.getuid() if hasattr(os, "getuid") else None
    for file in files:
        try:
            st = file.lstat()
        except FileNotFoundError:  # removed meanwhile (a rotated checkpoint)
            continue
        ours = stat.S_ISREG(st.st_mode) and (uid is None or st.st_uid == uid)
        if ours and (st.st_mode & 0o777) == OWNER_ONLY and mode != OWNER_ONLY:
            os.chmod(file, mode)


def replace_earlier_build(
    out: Path, earlier: Sequence[str], *, written: Collection[str] | None = None,
    inside: Sequence[str] = (),
) -> None:  # fmt: skip
    """Delete the entries `earlier` of `out` (an earlier build that `--overwrite` replaces),
    said on stderr first with what of the folder stays (entries outside `written`, default
    `earlier`) and what goes with them (`inside`: files a user put in them), as `mmalign toy
    data --overwrite` says it: nothing is deleted unsaid."""
    import shutil
    import sys

    if not earlier:
        return
    ours = set(earlier if written is None else written)
    others = sorted(p.name for p in out.iterdir() if p.name not in ours)
    kept = f"; left as they are: {', '.join(others)}" if others else ""
    gone = f", with {', '.join(inside)}" if inside else ""
    print(f"mmalign: --overwrite: replacing the earlier build in {out} ({', '.join(earlier)}"
          f"{gone}){kept}", file=sys.stderr)  # fmt: skip
    for name in earlier:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
