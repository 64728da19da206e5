"""A `Store` is one user's database file. It stores conversations and turns (the log),
episodes (every message, searchable) and memories (distilled, with validity and
provenance), each text in FTS5 (BM25) and each embedding in a vector index (numpy in
memory, or sqlite-vec in the file); the meta values and the egress log.

The other tables each have a small class of their own, reached from the store:
`store.notes`, `store.goals`, `store.calendar`, `store.documents`, `store.reminders`,
`store.inbox` and `store.jobs`. Callers outside `anima.store` use these methods and
`with store.transaction():` (several calls as one), never SQL or the connection.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import json
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from anima.errors import StoreError
from anima.store.calendar import Calendar
from anima.store.db import Connection, DatabaseError, connect, transaction
from anima.store.documents import Documents
from anima.store.goals import Goals
from anima.store.inbox import Inbox
from anima.store.jobs import Jobs
from anima.store.keys import Key
from anima.store.learn_queue import LearnQueue
from anima.store.migrations import migrate
from anima.store.notes import Notes
from anima.store.reminders import Reminders
from anima.store.sql import fts_query, insert, now, update
from anima.store.vectors import NumpyIndex, SqliteVecIndex, to_blob


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


@dataclass
class Episode:
    text: str
    role: str = "user"
    speaker: str = ""
    ts: str = field(default_factory=now)
    source: str = "chat"
    ref: str | None = None
    conversation_id: int | None = None
    id: int | None = None


@dataclass
class Memory:
    text: str
    kind: str = "fact"
    subject: str = "user"
    ref_date: str | None = None
    valid_from: str = field(default_factory=now)
    valid_to: str | None = None
    confidence: float = 1.0
    source_ids: list[int] = field(default_factory=list)
    created_at: str = field(default_factory=now)
    updated_at: str = field(default_factory=now)
    id: int | None = None


KINDS = ("fact", "preference", "event", "plan", "person", "relation")
USER_SUBJECTS = ("user", "the user", "me")


def in_profile(memory: Mapping) -> bool:
    """Whether a current memory (its columns: a row, or `asdict(memory)`) is shown on
    every turn: it is about the user themself, or it tells someone's name. (Other
    people's preferences are recalled when asked about.)"""
    return memory["subject"].lower() in USER_SUBJECTS or "name is" in memory["text"].lower()


def profile_rank(memory: Mapping) -> tuple:
    """The profile's order, highest first: a name ("my name is ..."), then preferences,
    then the surer, then the latest changed."""
    tells_name = "name is" in memory["text"].lower()
    return (tells_name, memory["kind"] == "preference", memory["confidence"], memory["updated_at"])


def _locked(method):
    """One connection per store, shared by threads (a server's requests, the learner):
    every use of it, reads included, holds the store's lock; writes hold it through
    `Store.transaction()`."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


_TABLES = {"episodes": Episode, "memories": Memory}


class Store:
    def __init__(self, path: Path, key: Key | None = None, vectors: str = "auto"):
        self.path = path
        self.db, vec_loaded = connect(path, key, vectors)
        self.vectors = SqliteVecIndex(self.db) if vec_loaded else NumpyIndex(self.db)
        self.encrypted = key is not None
        self._lock = threading.RLock()
        self.notes, self.goals, self.calendar = Notes(self), Goals(self), Calendar(self)
        self.documents, self.reminders = Documents(self), Reminders(self)
        self.inbox, self.jobs, self.learn_queue = Inbox(self), Jobs(self), LearnQueue(self)
        with self._lock:
            try:
                migrate(self.db)
            except DatabaseError as exc:
                raise StoreError(
                    f"cannot use the database {path}: {exc}", "check its permissions, or move it aside to start fresh"
                ) from exc
            if dim := self.meta("embed_dim"):
                for table in _TABLES:
                    self.vectors.sync(table, int(dim))

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """Hold the store's lock and run the block as one transaction: committed when it
        ends, rolled back when it raises. A transaction inside another joins it, so the
        store's methods can be called in the block. (The connection it yields is for the
        store's own tables; callers outside `anima.store` use the methods.)"""
        with self._lock:
            try:
                with transaction(self.db):
                    yield self.db
            except BaseException:
                self.vectors.reset()  # an in-memory index may hold rows the rollback undid
                raise

    @_locked
    def _read(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        """The rows of one query, as dicts (for the store's own tables, in this package)."""
        return [dict(r) for r in self.db.execute(sql, params)]

    # --- what the tables' classes (notes.py, ...) use: the same on both backends ------
    # SQL with `?` placeholders, written to run on SQLite and PostgreSQL alike.

    _select = _read

    def _write(self, sql: str, params: tuple = ()) -> int:
        """Run one statement in a transaction (or the one open); returns the rows changed."""
        with self.transaction() as db:
            return db.execute(sql, params).rowcount

    def _insert(self, table: str, row: dict, conflict: str | None = None, replace: Iterable[str] = ()) -> int | None:
        """`sql.insert` in a transaction (or the one open)."""
        with self.transaction() as db:
            return insert(db, table, row, conflict, replace)

    def _update(self, table: str, changes: dict, **where) -> int:
        """`sql.update` in a transaction (or the one open)."""
        with self.transaction() as db:
            return update(db, table, changes, **where)

    @_locked
    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM _anima_meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            insert(db, "_anima_meta", {"key": key, "value": value}, conflict="key", replace=["value"])

    # --- conversations and turns ----------------------------------------------

    def new_conversation(self, persona: str, title: str = "") -> int:
        with self.transaction() as db:
            return insert(db, "conversations", {"title": title, "persona": persona, "created_at": now()})

    @_locked
    def conversations(self, limit: int = 50) -> list[Conversation]:
        rows = self.db.execute(
            "SELECT id, title, persona, created_at FROM conversations ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [Conversation(**dict(r)) for r in rows]

    def log_turn(self, turn: Turn) -> int:
        row = asdict(turn)
        del row["id"]
        with self.transaction() as db:
            turn.id = insert(db, "turns", row)
            if turn.status == "ok":  # an untitled conversation is named by its first question
                update(db, "conversations", {"title": turn.user_text[:60]}, id=turn.conversation_id, title="")
        return turn.id

    @_locked
    def turns(self, conversation_id: int, limit: int | None = None) -> list[Turn]:
        """The conversation's last `limit` turns (all when None), oldest first."""
        rows = self.db.execute(
            "SELECT * FROM (SELECT * FROM turns WHERE conversation_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
            (conversation_id, -1 if limit is None else limit),
        )
        return [Turn(**dict(r)) for r in rows]

    @_locked
    def count_turns(self) -> int:
        return self.db.execute("SELECT count(*) FROM turns").fetchone()[0]

    # --- episodes and memories: one code path for both tables ------------------

    @_locked
    def _check_dim(self, vector) -> bytes | None:
        """The vector as stored; the first one sets the database's dimension."""
        blob = to_blob(vector)
        dim = len(vector)
        known = self.meta("embed_dim")
        if known is None:
            self.set_meta("embed_dim", str(dim))
            for table in _TABLES:
                self.vectors.sync(table, dim)
        elif int(known) != dim:
            raise StoreError(
                f"this database holds {known}-d embeddings, not {dim}-d",
                "use the embedder it was made with, or run `anima memory reindex`",
            )
        return blob

    def _add(self, table: str, record, vector, index_text: str | None = None) -> int:
        row = asdict(record)
        if row["id"] is None:  # a given id is kept (imports); else SQLite picks one
            del row["id"]
        if "source_ids" in row:
            row["source_ids"] = json.dumps(row["source_ids"])
        with self.transaction() as db:
            row["embedding"] = blob = self._check_dim(vector) if vector is not None else None
            rowid = insert(db, table, row)
            insert(db, f"fts_{table}", {"rowid": rowid, "text": index_text or record.text})
            if blob is not None:
                self.vectors.upsert(table, rowid, blob)
        record.id = rowid
        return rowid

    def add_memories(self, memories: list[Memory], vectors) -> None:
        """Many memories in one transaction (imports, benchmarks)."""
        with self.transaction():
            for memory, vector in zip(memories, vectors):
                memory.id = None
                self._add("memories", memory, vector)

    @_locked
    def _get(self, table: str, ids: list[int]) -> list:
        if not ids:
            return []
        cls, names = _TABLES[table], [f.name for f in fields(_TABLES[table])]
        rows = self.db.execute(
            f"SELECT {', '.join(names)} FROM {table} WHERE id IN ({', '.join('?' * len(ids))})", list(ids)
        ).fetchall()
        by_id = {
            r["id"]: cls(
                **{**dict(r), **({"source_ids": json.loads(r["source_ids"])} if "source_ids" in names else {})}
            )
            for r in rows
        }
        return [by_id[i] for i in ids if i in by_id]

    @_locked
    def search_text(self, table: str, query: str, k: int) -> list[tuple[int, float]]:
        """BM25 over the table's FTS index: (id, score), best first (higher is better)."""
        q = fts_query(query)
        if not q:
            return []
        rows = self.db.execute(
            f"SELECT rowid, bm25(fts_{table}) AS s FROM fts_{table} WHERE fts_{table} MATCH ? "
            "ORDER BY s, rowid LIMIT ?",
            (q, k),
        )
        return [(int(r[0]), -float(r[1])) for r in rows]

    @_locked
    def search_vector(self, table: str, vector, k: int) -> list[tuple[int, float]]:
        """Nearest neighbours by cosine: (id, similarity), best first."""
        blob = self._check_dim(vector) if self.meta("embed_dim") is not None else None
        if blob is None:
            return []
        return [(i, 1.0 - d) for i, d in self.vectors.search(table, blob, k)]

    def _delete(self, table: str, rowid: int) -> bool:
        """Hard delete: the row, its FTS entry and its vector."""
        with self.transaction() as db:
            gone = db.execute(f"DELETE FROM {table} WHERE id = ?", (rowid,)).rowcount
            db.execute(f"DELETE FROM fts_{table} WHERE rowid = ?", (rowid,))
            if self.meta("embed_dim"):  # no vector index exists before the first vector
                self.vectors.delete(table, rowid)
        return bool(gone)

    # episodes

    def add_episode(self, episode: Episode, vector=None, index_text: str | None = None) -> int:
        """`index_text`: what full-text search sees, when not just the text (e.g. with the speaker)."""
        return self._add("episodes", episode, vector, index_text)

    def episodes(self, ids: list[int]) -> list[Episode]:
        return self._get("episodes", ids)

    @_locked
    def episodes_between(self, start: str, end: str, limit: int = 200) -> list[Episode]:
        ids = [
            r[0]
            for r in self.db.execute(
                "SELECT id FROM episodes WHERE ts >= ? AND ts < ? ORDER BY ts LIMIT ?", (start, end, limit)
            )
        ]
        return self.episodes(ids)

    @_locked
    def replies(self, ids: list[int]) -> dict[int, Episode]:
        """For each episode, the next one in the same conversation or source within an
        hour, if any: the message that answered it."""
        found = {}
        for e in self.episodes(ids):
            row = self.db.execute(
                "SELECT id FROM episodes WHERE id > ? AND source = ? "
                "AND coalesce(conversation_id, -1) = coalesce(?, -1) "
                "AND ts <= strftime('%Y-%m-%dT%H:%M:%S', ?, '+1 hour') || 'z' ORDER BY id LIMIT 1",
                (e.id, e.source, e.conversation_id, e.ts[:19]),
            ).fetchone()
            if row:
                found[e.id] = self.episodes([row[0]])[0]
        return found

    @_locked
    def recent_episode_ids(self, limit: int) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM episodes ORDER BY ts DESC, id DESC LIMIT ?", (limit,))]

    @_locked
    def count_episodes(self) -> int:
        return self.db.execute("SELECT count(*) FROM episodes").fetchone()[0]

    # memories

    def add_memory(self, memory: Memory, vector=None) -> int:
        return self._add("memories", memory, vector)

    def memories(self, ids: list[int]) -> list[Memory]:
        return self._get("memories", ids)

    def log_egress(self, destination: str, chars: int, redacted: dict[str, int]) -> None:
        with self.transaction() as db:
            redacted_json = json.dumps(redacted, sort_keys=True)
            insert(db, "egress", {"ts": now(), "destination": destination, "chars": chars, "redacted": redacted_json})

    @_locked
    def egress(self, limit: int = 100) -> list[dict]:
        rows = self.db.execute(
            "SELECT ts, destination, chars, redacted FROM egress ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [{"ts": r[0], "destination": r[1], "chars": r[2], "redacted": json.loads(r[3])} for r in rows]

    @_locked
    def person_names(self) -> list[str]:
        """Subjects of current memories other than the user: the people anima knows."""
        rows = self.db.execute(
            "SELECT DISTINCT subject FROM memories "
            "WHERE valid_to IS NULL AND lower(subject) NOT IN ('user', 'the user', 'me', '')"
        ).fetchall()
        return [r[0] for r in rows]

    @_locked
    def list_memories(self, kind: str | None = None, include_invalid: bool = False, limit: int = 1000) -> list[Memory]:
        where, params = ["1 = 1"], []
        if kind:
            where.append("kind = ?")
            params.append(kind)
        if not include_invalid:
            where.append("valid_to IS NULL")
        ids = [
            r[0]
            for r in self.db.execute(
                f"SELECT id FROM memories WHERE {' AND '.join(where)} ORDER BY id LIMIT ?", (*params, limit)
            )
        ]
        return self.memories(ids)

    @_locked
    def profile_memories(self, limit: int) -> list[Memory]:
        """The current memories `in_profile`, best first by `profile_rank` (ties: oldest
        first). SQL narrows to the candidates `in_profile` names; Python decides."""
        marks = ",".join("?" * len(USER_SUBJECTS))
        rows = self.db.execute(
            "SELECT id, subject, kind, text, confidence, updated_at FROM memories WHERE valid_to IS NULL"
            f" AND (lower(subject) IN ({marks}) OR lower(text) LIKE '%name is%') ORDER BY id",
            tuple(USER_SUBJECTS),
        )
        best = heapq.nlargest(limit, filter(in_profile, rows), key=profile_rank)
        return self.memories([r["id"] for r in best])

    def update_memory(self, memory: Memory, vector=None) -> None:
        """Change a memory in place (the user's own edit); `vector` when the text changed."""
        memory.updated_at = now()
        row = asdict(memory)
        row["source_ids"] = json.dumps(row["source_ids"])
        del row["id"]
        with self.transaction() as db:
            if vector is not None:  # new text, new vector (or none, for text without words)
                row["embedding"] = blob = self._check_dim(vector)
            update(db, "memories", row, id=memory.id)
            update(db, "fts_memories", {"text": memory.text}, rowid=memory.id)
            if vector is not None:
                if blob is not None:
                    self.vectors.upsert("memories", memory.id, blob)
                elif self.meta("embed_dim"):
                    self.vectors.delete("memories", memory.id)

    def invalidate_memory(self, memory_id: int, when: str | None = None) -> None:
        with self.transaction() as db:
            update(db, "memories", {"valid_to": when or now(), "updated_at": now()}, id=memory_id)

    def delete_memory(self, memory_id: int) -> bool:
        return self._delete("memories", memory_id)

    def delete_episode(self, episode_id: int) -> bool:
        return self._delete("episodes", episode_id)
