"""Server accounts: user names and the hashes of their API keys.

A key is shown once, when it is made; only its SHA-256 is kept (keys are 256 random
bits, so a plain hash is enough: there is nothing to brute-force). The file holds
no personal data, so it is plain SQLite; each user's own data lives in their own
encrypted store. With `store.url` on PostgreSQL, the same table is in the schema
`"anima-accounts"` there (`PgAccounts`), so that servers on several machines share it.
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
        self._insert({"key_hash": _hash(key), "user": user, "key_prefix": key[:12]})
        return key

    def user_for(self, key: str) -> str | None:
        rows = self._query('SELECT "user" FROM api_keys WHERE key_hash = ? AND revoked = 0', (_hash(key),))
        return rows[0][0] if rows else None

    def revoke(self, user_or_prefix: str) -> int:
        """Revoke every key of a user, or the key with that prefix; returns how many."""
        return self._change(
            'UPDATE api_keys SET revoked = 1 WHERE ("user" = ? OR key_prefix = ?) AND revoked = 0',
            (user_or_prefix, user_or_prefix),
        )

    def list(self) -> list[Account]:
        rows = self._query('SELECT "user", key_prefix, created_at, revoked FROM api_keys ORDER BY created_at, "user"')
        return [Account(r[0], r[1], r[2], bool(r[3])) for r in rows]

    def any_active(self) -> bool:
        return bool(self._query("SELECT 1 FROM api_keys WHERE revoked = 0 LIMIT 1"))

    def any_made(self) -> bool:
        """Whether a key was ever made, revoked ones too: a server with accounts needs a
        key for every request, even after its last key is revoked."""
        return bool(self._query("SELECT 1 FROM api_keys LIMIT 1"))

    # --- the SQL, on SQLite (PgAccounts runs the same statements on PostgreSQL, `?` as `%s`) ---

    def _insert(self, row: dict) -> None:
        with self._lock, transaction(self.db):
            insert(self.db, "api_keys", row)

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return [tuple(r) for r in self.db.execute(sql, params)]

    def _change(self, sql: str, params: tuple = ()) -> int:
        with self._lock, transaction(self.db):
            return self.db.execute(sql, params).rowcount


ACCOUNTS_SCHEMA = '"anima-accounts"'  # never a user's: theirs are anima_<name>, with an underscore


class PgAccounts(Accounts):
    """The accounts in PostgreSQL, as the role of `store.url` (not a user's role): the
    same methods, the same table."""

    def __init__(self, url: str):
        from anima.store.pg_db import connect

        self.db = connect(url)
        self._lock = threading.Lock()
        with self._lock, self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(hashtext('anima accounts'))")
            self.db.execute(f"CREATE SCHEMA IF NOT EXISTS {ACCOUNTS_SCHEMA}")
            self.db.execute(
                f"CREATE TABLE IF NOT EXISTS {ACCOUNTS_SCHEMA}.api_keys (key_hash TEXT PRIMARY KEY, "
                '"user" TEXT NOT NULL, key_prefix TEXT NOT NULL, created_at TEXT NOT NULL DEFAULT '
                "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), revoked INTEGER NOT NULL DEFAULT 0)"
            )
            self.db.execute(f"SET search_path TO {ACCOUNTS_SCHEMA}")

    def _insert(self, row: dict) -> None:
        with self._lock, self.db.transaction():
            self.db.execute(
                'INSERT INTO api_keys (key_hash, "user", key_prefix) VALUES (%(key_hash)s, %(user)s, %(key_prefix)s)',
                row,
            )

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        from anima.store.pg_db import placeholders

        with self._lock:
            return [tuple(r.values()) for r in self.db.execute(placeholders(sql), params)]

    def _change(self, sql: str, params: tuple = ()) -> int:
        from anima.store.pg_db import placeholders

        with self._lock, self.db.transaction():
            return self.db.execute(placeholders(sql), params).rowcount


def open_accounts(data_dir: Path, url: str = "") -> Accounts:
    """The accounts: in PostgreSQL when the store is there (`store.url`), else the data
    dir's file."""
    return PgAccounts(url) if url else Accounts(data_dir / "accounts.db")
