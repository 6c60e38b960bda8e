"""Pseudonymous annotator ids for exports: the `user_id` column.

Personalised preference training (PPD, Dang et al., CVPR 2025) groups votes by annotator, so an
export needs an id that is the same for one annotator in every export of a database, but it
should not carry the login name out of the labeling team. The id is

    user_id = "u" + hex(HMAC-SHA256(key, annotator name))[:16]

with `key` 32 random bytes made once per database and kept in its `settings` table (a
keyed hash: without the key, guessing names and hashing them does not find who is who).
Exports of the same database agree; two databases (two keys) give one annotator two
unrelated ids, so datasets from different teams cannot be joined on it. 64 bits: a
collision among 10^4 annotators has a chance of about 3e-12.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

SETTING = "user_id_key"


class Pseudonyms:
    """`pseudonyms(name)` -> the annotator's export id in this database."""

    def __init__(self, store: Any) -> None:
        # the first export (or server) to ask makes the key; any racing one reads it back
        key = store.setting_once(SETTING, lambda: secrets.token_hex(32))
        self._key = bytes.fromhex(key)
        self._cache: dict[str, str] = {}

    def __call__(self, annotator: str) -> str:
        found = self._cache.get(annotator)
        if found is None:
            digest = hmac.new(self._key, annotator.encode(), hashlib.sha256).hexdigest()
            found = self._cache[annotator] = "u" + digest[:16]
        return found
