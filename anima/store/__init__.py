"""Storage: one encrypted SQLite database per user. No SQL outside this package."""

from __future__ import annotations

from pathlib import Path

from anima.store.db import is_plain
from anima.store.keys import Key, user_key
from anima.store.sql import query_words
from anima.store.store import KINDS, Conversation, Episode, Memory, Store, Turn


def user_db_path(data_dir: Path, user: str) -> Path:
    return data_dir / "users" / user / "anima.db"


def open_store(data_dir: Path, user: str, encrypt: bool = True, vectors: str = "auto", url: str = "") -> Store:
    """The user's store, encrypted unless `encrypt` is False; a key is made for a new
    database (or for a plain one being encrypted), never for an existing encrypted one.
    With a PostgreSQL `url`, the user's schema on that server instead (`store/pg.py`)."""
    if url:
        from anima.store.pg import PgStore

        return PgStore(url, user)
    path = user_db_path(data_dir, user)
    key = None
    if encrypt:
        fresh = not path.exists() or path.stat().st_size == 0 or is_plain(path)
        key = user_key(user, create=fresh)
        if key is None:
            from anima.errors import WrongPassphrase
            from anima.store.keys import keys_dir

            raise WrongPassphrase(
                f"no key for the encrypted database {path}",
                f"set ANIMA_PASSPHRASE, or restore {keys_dir() / (user + '.key')}",
            )
    return Store(path, key, vectors)


__all__ = [
    "KINDS",
    "Conversation",
    "Episode",
    "Key",
    "Memory",
    "Store",
    "Turn",
    "open_store",
    "query_words",
    "user_db_path",
    "user_key",
]
