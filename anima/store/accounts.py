"""Server accounts: user names and the hashes of their API keys.

A key is shown once, when it is made; only its SHA-256 is kept (keys are 256 random
bits, so a plain hash is enough: there is nothing to brute-force). The file holds
no personal data, so it is plain SQLite; each user's own data lives in their own
encrypted store.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from anima.config import USER_NAME
from anima.errors import BadInput
from anima.store.db import connect, transaction
from anima.store.sql import insert

NAME = re.compile(USER_NAME)


@dataclass
class Account:
    name: str
    key_prefix: str
    created_at: str
    revoked: bool


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Accounts:
    def __init__(self, path: Path):
        self.db, _ = connect(path, None, vectors="numpy")
        self._lock = threading.Lock()
        with self._lock, transaction(self.db):
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS api_keys (key_hash TEXT PRIMARY KEY, user TEXT NOT NULL, "
                "key_prefix TEXT NOT NULL, "
                "created_at TEXT NOT NULL DEFAULT (datetime('now')), revoked INTEGER NOT NULL DEFAULT 0)"
            )

    def add(self, user: str) -> str:
        """A new API key for `user` (made if new). The key is returned once, never stored."""
        if not NAME.match(user):
            raise BadInput(
                f"'{user}' is not a valid user name", "use letters, digits, '_', '.', '-' (not starting with '.')"
            )
        key = "anima-" + secrets.token_urlsafe(32)
        with self._lock, transaction(self.db):
            insert(self.db, "api_keys", {"key_hash": _hash(key), "user": user, "key_prefix": key[:12]})
        return key

    def user_for(self, key: str) -> str | None:
        row = self.db.execute("SELECT user FROM api_keys WHERE key_hash = ? AND revoked = 0", (_hash(key),)).fetchone()
        return row[0] if row else None

    def revoke(self, user_or_prefix: str) -> int:
        """Revoke every key of a user, or the key with that prefix; returns how many."""
        with self._lock, transaction(self.db):
            return self.db.execute(
                "UPDATE api_keys SET revoked = 1 WHERE (user = ? OR key_prefix = ?) AND revoked = 0",
                (user_or_prefix, user_or_prefix),
            ).rowcount

    def list(self) -> list[Account]:
        rows = self.db.execute("SELECT user, key_prefix, created_at, revoked FROM api_keys ORDER BY created_at, user")
        return [Account(r[0], r[1], r[2], bool(r[3])) for r in rows]

    def any_active(self) -> bool:
        return self.db.execute("SELECT 1 FROM api_keys WHERE revoked = 0 LIMIT 1").fetchone() is not None

    def any_made(self) -> bool:
        """Whether a key was ever made, revoked ones too: a server with accounts needs a
        key for every request, even after its last key is revoked."""
        return self.db.execute("SELECT 1 FROM api_keys LIMIT 1").fetchone() is not None
