"""The one place that writes SQL. A `Store` is one user's database file.

Today the connection is the standard library's SQLite; the encrypted SQLCipher
connection slots in at `connect()` without changing anything above it.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from anima.errors import StoreError
from anima.store.migrations import migrate


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Turn:
    conversation_id: int
    persona: str
    model: str
    user_text: str
    reply: str
    status: str = "ok"  # ok | stopped (user interrupted) | error
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    first_token_ms: float | None = None
    created_at: str = field(default_factory=now)
    id: int | None = None


@dataclass
class Conversation:
    id: int
    title: str
    persona: str
    created_at: str


def connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
    except (OSError, sqlite3.OperationalError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise StoreError(f"cannot open the database {path}: {reason}", "check the folder's permissions, or set ANIMA_HOME to a writable folder") from exc
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a readable database: {exc}", "restore it from a backup, or move it aside to start fresh") from exc
    db.execute("PRAGMA synchronous=FULL")  # an acknowledged turn survives kill -9 and power loss
    db.execute("PRAGMA foreign_keys=ON")
    db.row_factory = sqlite3.Row
    return db


class Store:
    def __init__(self, path: Path):
        self.path = path
        self.db = connect(path)
        self._lock = threading.Lock()
        with self._lock:
            try:
                migrate(self.db)
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot use the database {path}: {exc}", "check its permissions, or move it aside to start fresh") from exc

    def close(self) -> None:
        self.db.close()

    def _write(self, sql: str, params: tuple | dict = ()) -> int:
        with self._lock:
            try:
                with self.db:
                    return self.db.execute(sql, params).lastrowid
            except sqlite3.OperationalError as exc:
                raise StoreError(f"cannot write to {self.path}: {exc}", "check free space and permissions") from exc

    # conversations

    def new_conversation(self, persona: str, title: str = "") -> int:
        return self._write("INSERT INTO conversations (title, persona, created_at) VALUES (?, ?, ?)", (title, persona, now()))

    def conversations(self, limit: int = 50) -> list[Conversation]:
        rows = self.db.execute("SELECT id, title, persona, created_at FROM conversations ORDER BY id DESC LIMIT ?", (limit,))
        return [Conversation(**dict(r)) for r in rows]

    # turns

    def log_turn(self, turn: Turn) -> int:
        row = asdict(turn)
        del row["id"]
        cols = ", ".join(row)
        turn.id = self._write(f"INSERT INTO turns ({cols}) VALUES ({', '.join(':' + c for c in row)})", row)
        if turn.status == "ok":
            self._write("UPDATE conversations SET title = ? WHERE id = ? AND title = ''", (turn.user_text[:60], turn.conversation_id))
        return turn.id

    def turns(self, conversation_id: int, limit: int | None = None) -> list[Turn]:
        """The conversation's last `limit` turns (all when None), oldest first."""
        rows = self.db.execute(
            "SELECT * FROM (SELECT * FROM turns WHERE conversation_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
            (conversation_id, -1 if limit is None else limit),
        )
        return [Turn(**dict(r)) for r in rows]

    def count_turns(self) -> int:
        return self.db.execute("SELECT count(*) FROM turns").fetchone()[0]
