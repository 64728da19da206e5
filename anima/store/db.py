"""Opening a database: SQLCipher (encrypted at rest), WAL, and sqlite-vec when asked for.

`sqlcipher3` is SQLite with encryption; without a key it is plain SQLite, so one
driver serves both. A wrong key is caught before anything is written: SQLCipher
cannot tell a wrong key from a damaged file, so the check is a read of the schema
right after the key is set. A plain (unencrypted) anima database found where an
encrypted one is expected is encrypted in place, through a verified copy.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

import sqlcipher3.dbapi2 as sqlite

from anima.errors import StoreError, WrongPassphrase
from anima.store.keys import Key

log = logging.getLogger("anima")
SQLITE_HEADER = b"SQLite format 3\x00"  # plain SQLite files start with it; encrypted ones look random
DatabaseError = sqlite.DatabaseError
OperationalError = sqlite.OperationalError
Connection = sqlite.Connection


def is_plain(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(16) == SQLITE_HEADER


def is_utf8(text: str) -> bool:
    """False for text holding surrogates (a lone "\\ud800" in JSON; bytes that were not
    UTF-8, as Python passes them on from argv or stdin): SQLite cannot store it."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def connect(path: Path, key: Key | None = None, vectors: str = "auto") -> tuple[Connection, bool]:
    """Open (creating if needed) the database at `path`; returns the connection and
    whether sqlite-vec is loaded. `vectors`: "auto" | "sqlite-vec" | "numpy"."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # SQLite gives its -wal and -shm files the same mode
        os.chmod(path, 0o600)  # a file made by an older anima, or under a loose umask
        if key and path.exists() and path.stat().st_size and is_plain(path):
            encrypt_in_place(path, key)
        db = _open(path, key)
        db.execute("PRAGMA journal_mode=WAL")
    except OSError as exc:
        raise StoreError(
            f"cannot open the database {path}: {exc.strerror}",
            "check the folder's permissions, or set ANIMA_HOME to a writable folder",
        ) from exc
    except OperationalError as exc:
        raise StoreError(
            f"cannot open the database {path}: {exc}",
            "check the folder's permissions, or set ANIMA_HOME to a writable folder",
        ) from exc
    db.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives kill -9 and power loss
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA cache_size=-262144")  # up to 256 MB, taken as used: decrypted pages (vectors) are worth keeping
    db.row_factory = sqlite.Row
    return db, load_sqlite_vec(db, vectors)


def _open(path: Path, key: Key | None) -> Connection:
    db = sqlite.connect(str(path), check_same_thread=False, isolation_level=None)
    if key:
        # SQLCipher's own log would print two C-level lines before the one error a wrong
        # key gets here (its default level is WARN)
        db.execute("PRAGMA cipher_log_level = NONE")
        db.execute(f"PRAGMA key = {key.literal()}")
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except OperationalError:  # cannot open or read the file at all: the caller says so
        db.close()
        raise
    except DatabaseError as exc:  # "file is not a database": wrong key, or not SQLite
        db.close()
        if key:
            raise WrongPassphrase(
                f"cannot decrypt {path}: wrong key or passphrase (from {key.source}), or the file is damaged",
                "set ANIMA_PASSPHRASE to the passphrase it was made with, or restore its key file; "
                "the file was not changed",
            ) from exc
        raise StoreError(
            f"{path} is not a readable database (encrypted, or damaged)",
            "set store.encrypt = true to open an encrypted one; the file was not changed",
        ) from exc
    return db


def encrypt_in_place(path: Path, key: Key) -> None:
    """Encrypt a plain database: export to a new encrypted file, check it, swap it in."""
    tmp = path.with_name(path.name + ".encrypting")
    tmp.unlink(missing_ok=True)
    plain = sqlite.connect(str(path), isolation_level=None)
    try:
        plain.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = plain.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        plain.execute(f"ATTACH DATABASE ? AS encrypted KEY {key.literal()}", (str(tmp),))
        plain.execute("SELECT sqlcipher_export('encrypted')")
        plain.execute("DETACH DATABASE encrypted")
    finally:
        plain.close()
    check = _open(tmp, key)
    after = check.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    check.close()
    if after != before:
        tmp.unlink()
        raise StoreError(f"encrypting {path} failed (schema differs); the plain file was kept", "report this as a bug")
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    os.replace(tmp, path)
    log.warning("encrypted %s (it was a plain database)", path)


@contextlib.contextmanager
def transaction(db: Connection) -> Iterator[Connection]:
    """BEGIN ... COMMIT, or ROLLBACK on any exception. (The connection is in autocommit
    mode, where Python's `with db:` would not open a transaction at all.) A write the
    disk refuses (full, read-only) becomes a StoreError; what was committed before stays.
    Inside a transaction already, the block joins it: the outer one commits or rolls back."""
    if db.in_transaction:
        yield db
        return
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    except OperationalError as exc:
        raise StoreError(
            f"cannot write to the database: {exc}",
            "free some disk space, or check the folder's permissions; nothing stored before was lost",
        ) from exc


def load_sqlite_vec(db: Connection, vectors: str) -> bool:
    """Only for `store.vectors = "sqlite-vec"`: "auto" is numpy, which searched faster at
    every size measured (`anima bench memory-scale`)."""
    if vectors != "sqlite-vec":
        return False
    try:
        import sqlite_vec

        db.enable_load_extension(True)
        sqlite_vec.load(db)
        db.enable_load_extension(False)
        return True
    except (ImportError, AttributeError, OperationalError) as exc:
        raise StoreError(
            f"sqlite-vec did not load: {exc}", "pip install sqlite-vec, or set store.vectors = 'auto'"
        ) from exc
