"""The users file: one annotator per line, `name:role:scrypt$N$r$p$salt$hash`.

Passwords are hashed with scrypt (RFC 7914; stdlib `hashlib.scrypt`, N=2^17, r=8, p=1) with
a 16-byte random salt; verification compares in constant time. Each hash keeps its own
parameters, so hashes made before the cost went up (N=2^14) still verify; the server never
rewrites the users file (an admin's file, edited by hand and by `adduser`: a rewrite racing
one could bring back a removed user or undo a reset, and a new hash ends the user's other
sessions), so an old hash gets the new cost when its password is set again (`mmalign label
adduser`); the server names such users at start-up. Roles: `annotator` labels, `admin`
also sees the admin page.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROLES = ("annotator", "admin")
# fullmatched: with `match`, `$` also matches before a final newline ("alice\n" passed)
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# N=2^17 takes 128*r*N = 128 MiB and about 0.4 s of a core per check. Checks run on at most
# 4 threads (`login.off_loop`; one on a 2-core machine), so 512 MiB at most in flight. Tests
# set SCRYPT_N lower for speed; every hash carries its own parameters.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
_MAXMEM = 2**28  # 128*r*(N+2) bytes and the block buffers: 2^17 at r=8 fits, 2^18 does not
Params = tuple[int, int, int]


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password_hash: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    if not password:
        raise ValueError("the password is empty")
    salt = os.urandom(16) if salt is None else salt
    n, r, p = SCRYPT_N, SCRYPT_R, SCRYPT_P
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32,
                            maxmem=_MAXMEM)  # fmt: skip
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def hash_params(stored: str) -> Params | None:
    """(N, r, p) of a stored hash; None when it is not one this module can check."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = (int(x) for x in parts[1:4])
    except ValueError:
        return None
    return (n, r, p) if n > 1 and r > 0 and p > 0 else None


def weaker(params: Params) -> bool:
    """Whether hashes with `params` cost less than new ones."""
    n, r, p = params
    return n * r < SCRYPT_N * SCRYPT_R or n * r * p < SCRYPT_N * SCRYPT_R * SCRYPT_P


def check_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored`, checked with the hash's own parameters; False
    for a hash that does not parse or needs more memory than `_MAXMEM`."""
    params = hash_params(stored)
    if params is None:
        return False
    n, r, p = params
    _, _, _, _, salt, digest = stored.split("$")
    try:
        got = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=n, r=r, p=p,
            dklen=len(digest) // 2, maxmem=_MAXMEM,
        )  # fmt: skip
    except ValueError:  # bad hex, N not a power of 2, over the memory cap
        return False
    return hmac.compare_digest(got.hex(), digest)


def load_users(path: str | Path) -> dict[str, User]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"users file {path} not found: create it with `mmalign label adduser`"
        )
    users: dict[str, User] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3 or parts[1] not in ROLES or not _NAME.fullmatch(parts[0]):
            raise ValueError(f"{path}:{lineno}: expected name:role:hash with role in {ROLES}")
        users[parts[0]] = User(parts[0], parts[1], parts[2])
    return users


def add_user(path: str | Path, name: str, password: str, role: str = "annotator") -> User:
    """Add a user or replace their password/role; the file is rewritten atomically."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"user name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ . -")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    path = Path(path)
    if path.exists() and not path.is_file():  # load_users would say "not found: adduser"
        raise ValueError(f"users file {path} is a folder, not a file")
    if not path.parent.is_dir():  # else the error names the temporary file
        raise ValueError(f"users file {path}: no folder {path.parent}")
    users = load_users(path) if path.exists() else {}
    users[name] = User(name, role, hash_password(password))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{u.name}:{u.role}:{u.password_hash}\n" for u in users.values()))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return users[name]


class Authenticator:
    """`auth=` for Gradio: checks a name and password against the users file.

    The file is re-read when it changes, so `adduser` works on a running server.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: int | None = None
        self._problem: str | None = None  # the users file's error last warned about
        self._bad_stamp: int | None = None  # the version of the file that did not parse
        self._verified: dict[str, str] = {}  # name -> hash of its last successful login
        self._users: dict[str, User] = {}
        # Every login runs one scrypt per parameter set in the users file: the user's own
        # hash for theirs, a throwaway hash (made once) for each other one, and for an
        # unknown name all throwaways. A wrong name and a wrong password cost the same,
        # whichever parameters the user's hash has, so timing does not tell names apart.
        # (the users table, its throwaway hashes), swapped as one object: a login in another
        # thread reads a matching pair, never the new table with the old hashes
        self._dummies_of: tuple[dict[str, User] | None, dict[Params, str]] = (None, {})
        self._dummies_for(self.users())  # users(): fail at start-up, not at the first login

    def users(self) -> dict[str, User]:
        """The users, re-read when the file changes. A file that stops parsing (a hand edit
        with a typo, a file briefly gone) keeps the last good table, with one warning, instead
        of failing every request; at start-up it raises."""
        stamp: int | None = None
        try:
            stamp = self.path.stat().st_mtime_ns
            if stamp not in (self._stamp, self._bad_stamp):
                self._users, self._stamp, self._problem = load_users(self.path), stamp, None
        except (OSError, ValueError) as err:
            if self._stamp is None:
                raise
            self._bad_stamp = stamp  # not parsed again until the file changes
            if str(err) != self._problem:
                self._problem = str(err)
                print(f"label: warning: {err}; keeping the users read before", file=sys.stderr)
        return self._users

    def _dummies_for(self, users: dict[str, User]) -> dict[Params, str]:
        """A throwaway hash per parameter set of `users`, in a fixed order. A random digest
        is as good as a real one: no password matches it, and checking costs the same."""
        table, old = self._dummies_of
        if users is table:
            return old
        classes = sorted({p for u in users.values() if (p := hash_params(u.password_hash))})
        dummies = {
            (n, r, p): old.get((n, r, p))
            or f"scrypt${n}${r}${p}${os.urandom(16).hex()}${os.urandom(32).hex()}"
            for n, r, p in classes or [(SCRYPT_N, SCRYPT_R, SCRYPT_P)]
        }
        self._dummies_of = (users, dummies)  # new objects, never changed once published
        return dummies

    def __call__(self, name: str, password: str) -> bool:
        """One scrypt run per parameter set of the users file (one, once every hash has
        the current cost), whether or not `name` exists (blocking: about 0.4 s of CPU at
        N=2^17; the server runs it in a worker thread, `login.off_loop`)."""
        users = self.users()
        user = users.get(name)
        own = None if user is None else hash_params(user.password_hash)
        ok = False
        for params, dummy in self._dummies_for(users).items():
            if user is not None and params == own:
                ok = check_password(password, user.password_hash)
            else:
                check_password(password, dummy)
        if ok and user is not None:
            self._verified[name] = user.password_hash
        return ok and user is not None

    def weaker_hashes(self) -> list[str]:
        """The users whose password hash costs less than a new one (made before the cost
        went up): `mmalign label adduser` with their password again upgrades it."""
        return sorted(name for name, u in self.users().items()
                      if (p := hash_params(u.password_hash)) and weaker(p))  # fmt: skip

    def verified(self, name: str) -> str | None:
        """The hash the last successful login of `name` was checked against: a session is
        bound to it, so a password reset during the login ends that session."""
        return self._verified.get(name)

    def credential(self, name: str) -> str | None:
        """The stored password hash of `name` (None: no such user): a session is bound to
        it, so a new password or a removed user ends the sessions (`hardening.py`)."""
        user = self.users().get(name)
        return None if user is None else user.password_hash

    def role(self, name: str | None) -> str | None:
        user = self.users().get(name or "")
        return None if user is None else user.role
