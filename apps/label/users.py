"""The users file: one annotator per line, `name:role:scrypt$N$r$p$salt$hash`.

Passwords are hashed with scrypt (RFC 7914; stdlib `hashlib.scrypt`, N=2^14, r=8, p=1,
the interactive-login parameters the RFC's authors recommend), with a 16-byte random salt.
Verification compares in constant time. Roles: `annotator` labels, `admin` also sees
the admin page.
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
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_N, _R, _P = 2**14, 8, 1


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
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(
        password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
        dklen=len(digest) // 2, maxmem=2**26,
    )  # fmt: skip
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
        if len(parts) != 3 or parts[1] not in ROLES or not _NAME.match(parts[0]):
            raise ValueError(f"{path}:{lineno}: expected name:role:hash with role in {ROLES}")
        users[parts[0]] = User(parts[0], parts[1], parts[2])
    return users


def add_user(path: str | Path, name: str, password: str, role: str = "annotator") -> User:
    """Add a user or replace their password/role; the file is rewritten atomically."""
    if not _NAME.match(name):
        raise ValueError(f"user name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ . -")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    path = Path(path)
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
        self.users()  # fail at start-up, not at the first login
        # An unknown name is checked against this hash, made once here: both a wrong name
        # and a wrong password then cost one scrypt, so timing does not tell names apart.
        self._dummy_hash = hash_password(os.urandom(16).hex())

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

    def __call__(self, name: str, password: str) -> bool:
        """One scrypt run whether or not `name` exists (blocking: about 33 ms of CPU; the
        server runs it in a worker thread, `login.off_loop`)."""
        user = self.users().get(name)
        ok = check_password(password, self._dummy_hash if user is None else user.password_hash)
        if ok and user is not None:
            self._verified[name] = user.password_hash
        return ok and user is not None

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
