"""Where a user's database key comes from, in this order:

1. `ANIMA_PASSPHRASE`: a passphrase, stretched by SQLCipher's own KDF
   (PBKDF2-HMAC-SHA512, 256,000 iterations) every time the database opens.
2. The OS keyring (`pip install 'anima[keyring]'`, a desktop session): a random
   256-bit key stored under service "anima", the user's name.
3. A key file `<config dir>/keys/<user>.key` (mode 0600) holding a random 256-bit key.

A new key is made only for a database that does not exist yet; a key that is lost
cannot be recovered, so the key file (or passphrase) belongs in the user's backups.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from anima.config import config_path
from anima.errors import StoreError

log = logging.getLogger("anima")


@dataclass(frozen=True)
class Key:
    secret: str  # hex of a raw key, or a passphrase
    raw: bool  # True: 64 hex digits used directly; False: passphrase through the KDF
    source: str  # for messages: "ANIMA_PASSPHRASE", "keyring", or the key file's path

    def literal(self) -> str:
        """The key as SQLCipher takes it in `PRAGMA key = ...` and `ATTACH ... KEY ...`."""
        if self.raw:
            return f"\"x'{self.secret}'\""
        return "'" + self.secret.replace("'", "''") + "'"


def keys_dir() -> Path:
    return config_path().parent / "keys"


def user_key(user: str, create: bool) -> Key | None:
    """The key for `user`'s database; made (and saved) when `create` and none exists."""
    if passphrase := os.environ.get("ANIMA_PASSPHRASE"):
        return Key(passphrase, raw=False, source="ANIMA_PASSPHRASE")
    if (secret := _keyring_get(user)) is not None:
        return Key(secret, raw=True, source="keyring")
    path = keys_dir() / f"{user}.key"
    if path.exists():
        return Key(_read_key_file(path), raw=True, source=str(path))
    if not create:
        return None
    secret = secrets.token_hex(32)
    if not _keyring_set(user, secret):
        _write_key_file(path, secret)
        return Key(secret, raw=True, source=str(path))
    return Key(secret, raw=True, source="keyring")


def _read_key_file(path: Path) -> str:
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; run: chmod 600 %s", path, path)
    secret = path.read_text().strip()
    if len(secret) != 64 or any(c not in "0123456789abcdef" for c in secret):
        raise StoreError(f"key file {path} is damaged (expected 64 hex digits)", "restore it from your backup")
    return secret


def _write_key_file(path: Path, secret: str) -> None:
    """Written whole under a temporary name, then linked into place: a kill in between
    leaves no empty key file behind, and an existing key is never overwritten."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if the key file exists
    except OSError as exc:
        raise StoreError(
            f"cannot write key file {path}: {exc.strerror}", "check the folder's permissions, or set ANIMA_PASSPHRASE"
        ) from exc
    finally:
        with contextlib.suppress(OSError):  # nothing to clean where nothing could be made
            tmp.unlink(missing_ok=True)


def keyring_backend():
    if os.environ.get("ANIMA_NO_KEYRING") == "1":
        return None
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception:  # a broken keyring install must not stop anima
        return None
    if isinstance(backend, fail.Keyring) or "null" in type(backend).__module__:
        return None
    return keyring


def _keyring_get(user: str) -> str | None:
    if (kr := keyring_backend()) is None:
        return None
    try:
        return kr.get_password("anima", user)
    except Exception as exc:  # locked or unavailable keyring: fall back to the key file
        log.warning("keyring unavailable (%s); using the key file", exc)
        return None


def _keyring_set(user: str, secret: str) -> bool:
    if (kr := keyring_backend()) is None:
        return False
    try:
        kr.set_password("anima", user, secret)
        return True
    except Exception as exc:
        log.warning("keyring unavailable (%s); using a key file", exc)
        return False
