"""The store on PostgreSQL with pgvector, chosen by `store.url = "postgresql://..."`.

`PgStore` has the methods of `Store` for conversations and turns, episodes and memories
(add, get, list, full-text and vector search, delete, profile), the meta values and the
egress log; and the other tables (`store.notes`, `store.reminders`, ...) through the same
classes as SQLite's, which write SQL both backends run (`_select`, `_insert`, ...), full-text
search apart (`PgNotes`, `PgDocuments`).

Each user is a schema of their own, used through a role of their own (`pg_db.py` says how
and what that does and does not stop).
Why schemas rather than row-level security on shared tables: each user's tables keep
their own ids, migrations and embedding dimension, as a SQLite file does; each user has
an HNSW index of their own rows only, where a shared index filtered by user returns
fewer than k rows (the filter runs after the graph search); and forgetting a user is
`DROP SCHEMA ... CASCADE` (`drop_user`).

Full-text search ranks with `ts_rank` (normalised by document length), not BM25: the
scores differ from SQLite's, the order mostly agrees, and memory only uses the order.
Vector search is HNSW (approximate; exact on small tables) on cosine distance.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import math
import threading
from dataclasses import asdict, fields
from datetime import datetime, timedelta
from typing import Iterable, Iterator

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg.types.json import Jsonb  # noqa: E402

from anima.errors import StoreError
from anima.store.calendar import Calendar
from anima.store.documents import Documents
from anima.store.goals import Goals
from anima.store.inbox import Inbox
from anima.store.jobs import Jobs
from anima.store.learn_queue import LearnQueue
from anima.store.notes import Notes
from anima.store.pg_db import (  # first: a missing psycopg is a StoreError
    open_schema,
    placeholders,
    schema_name,
    to_vector,
    where,
)
from anima.store.reminders import Reminders
from anima.store.sql import now, query_words
from anima.store.store import USER_SUBJECTS, Conversation, Episode, Memory, Turn, in_profile, profile_rank

_TABLES = {"episodes": Episode, "memories": Memory}


def matching(words: list[str]) -> sql.Composable:
    """`(SELECT ...) AS query(q)`: q matches a tsvector holding any of the words."""
    tsquery = sql.SQL(" || ").join(
        [sql.SQL("plainto_tsquery({}::regconfig, %s)").format(sql.Literal(TS_CONFIG))] * len(words)
    )
    return sql.SQL("(SELECT {}) AS query(q)").format(tsquery)


ID_TABLES = (  # each with an identity id
    *("conversations", "turns", "episodes", "memories", "egress", "notes", "goals", "milestones", "events"),
    *("doc_passages", "reminders", "inbox"),
)
TS_CONFIG = "anima_english"  # made in each user's schema by m003_episodes
HNSW_EF_MAX = 1000  # pgvector's largest hnsw.ef_search


def _locked(method):
    """One connection per store, shared by threads: every use holds the store's lock."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class PgStore:
    encrypted = False  # at rest, PostgreSQL's data is as safe as the server's disk

    def __init__(self, url: str, user: str):
        self.url, self.user, self.schema = url, user, schema_name(user)
        self._lock = threading.RLock()
        self.db = open_schema(url, self.schema)
        self.notes, self.goals, self.calendar = PgNotes(self), Goals(self), Calendar(self)
        self.documents, self.reminders = PgDocuments(self), Reminders(self)
        self.inbox, self.jobs, self.learn_queue = Inbox(self), Jobs(self), LearnQueue(self)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """The block as one transaction, holding the store's lock; one inside another is a
        savepoint of it (its failure still raises, and so rolls back the outer one)."""
        try:
            with self._lock, self.db.transaction():
                yield self.db
        except psycopg.OperationalError as exc:  # the server went away, or refused the write
            raise StoreError(f"cannot write to PostgreSQL at {where(self.url)}: {exc}", "check the server") from exc

    @_locked
    def _read(self, query: str, params: tuple | dict = ()) -> list[dict]:
        return self.db.execute(query, params).fetchall()

    # --- what the tables' classes (notes.py, ...) use: the same as `Store`'s ----------

    def _select(self, query: str, params: tuple = ()) -> list[dict]:
        """A query written for both backends (`?` placeholders)."""
        return self._read(placeholders(query), params)

    def _write(self, query: str, params: tuple = ()) -> int:
        with self.transaction() as db:
            return db.execute(placeholders(query), params).rowcount

    def _insert(self, table: str, row: dict, conflict: str | None = None, replace: Iterable[str] = ()) -> int | None:
        """As `sql.insert`: the new id (None when a row with the same `conflict` value stays)."""
        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, row)),
            sql.SQL(", ").join(map(sql.Placeholder, row)),
        )
        if conflict:
            replace = list(replace)
            action = sql.SQL("DO UPDATE SET {}").format(
                sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in replace)
            )
            statement += sql.SQL(" ON CONFLICT ({}) {}").format(
                sql.Identifier(conflict), action if replace else sql.SQL("DO NOTHING")
            )
        with self.transaction() as db:
            found = db.execute(statement + sql.SQL(" RETURNING *"), row).fetchone()
        return found.get("id") if found else None

    def _update(self, table: str, changes: dict, **where) -> int:
        assert changes and where, "an UPDATE needs changes and a WHERE"
        statement = sql.SQL("UPDATE {} SET {} WHERE {}").format(
            sql.Identifier(table),
            sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in changes),
            sql.SQL(" AND ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder("where_" + c)) for c in where
            ),
        )
        with self.transaction() as db:
            return db.execute(statement, {**changes, **{f"where_{c}": v for c, v in where.items()}}).rowcount

    def meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM _anima_meta WHERE key = %s", (key,))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._insert("_anima_meta", {"key": key, "value": value}, conflict="key", replace=["value"])

    # --- conversations and turns ----------------------------------------------

    def new_conversation(self, persona: str, title: str = "") -> int:
        return self._insert("conversations", {"title": title, "persona": persona, "created_at": now()})

    def conversations(self, limit: int = 50) -> list[Conversation]:
        rows = self._read(
            "SELECT id, title, persona, created_at FROM conversations ORDER BY id DESC LIMIT %s", (limit,)
        )
        return [Conversation(**r) for r in rows]

    def log_turn(self, turn: Turn) -> int:
        row = asdict(turn)
        del row["id"]
        with self.transaction():
            turn.id = self._insert("turns", row)
            if turn.status == "ok":  # an untitled conversation is named by its first question
                self._update("conversations", {"title": turn.user_text[:60]}, id=turn.conversation_id, title="")
        return turn.id

    def turns(self, conversation_id: int, limit: int | None = None) -> list[Turn]:
        """The conversation's last `limit` turns (all when None), oldest first."""
        rows = self._read(
            "SELECT * FROM (SELECT * FROM turns WHERE conversation_id = %s ORDER BY id DESC LIMIT %s) t ORDER BY id",
            (conversation_id, limit),
        )
        return [Turn(**r) for r in rows]

    def count_turns(self) -> int:
        return self._read("SELECT count(*) AS n FROM turns")[0]["n"]

    # --- episodes and memories: one code path for both tables ------------------

    def _check_dim(self, vector) -> str | None:
        """The vector as stored; the first one sets the user's dimension, types the
        `embedding` columns with it and builds their HNSW indexes."""
        dim, known = len(vector), self.meta("embed_dim")
        if known is None:
            with self.transaction() as db:
                db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.schema,))  # another process may be here
                known = self.meta("embed_dim")
                if known is None:
                    known = str(dim)
                    self.index_vectors(dim)
        if int(known) != dim:
            raise StoreError(
                f"this database holds {known}-d embeddings, not {dim}-d",
                "use the embedder it was made with, or run `anima memory reindex`",
            )
        return to_vector(vector)

    def index_vectors(self, dim: int, kind: str = "hnsw") -> None:
        """Set the user's dimension: type the `embedding` columns with it and index them.
        HNSW is what the store makes, with the first vector (or after a bulk load, which is
        faster than growing the graph row by row). IVFFlat is for measuring (`anima bench
        memory-scale --pg-index ivfflat`): it is built from the rows already there, one list
        per 1000 rows as pgvector advises, and searched with sqrt(lists) probes, a setting
        of this connection only (a store opened later would search with one probe)."""
        assert kind in ("hnsw", "ivfflat"), kind
        with self.transaction() as db:
            self.set_meta("embed_dim", str(dim))
            probes = 1
            for name in _TABLES:
                table, index = sql.Identifier(name), sql.Identifier(f"{name}_embedding")
                db.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN embedding TYPE vector({})").format(table, dim))
                if kind == "hnsw":
                    hnsw = sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops)")
                    db.execute(hnsw.format(index, table))
                    continue
                rows = db.execute(sql.SQL("SELECT count(embedding) AS n FROM {}").format(table)).fetchone()["n"]
                lists = max(1, rows // 1000)
                probes = max(probes, math.ceil(math.sqrt(lists)))
                ivfflat = sql.SQL("CREATE INDEX {} ON {} USING ivfflat (embedding vector_cosine_ops) WITH (lists = {})")
                db.execute(ivfflat.format(index, table, sql.Literal(lists)))
            if kind == "ivfflat":
                db.execute("SELECT set_config('ivfflat.probes', %s, false)", (str(probes),))

    def insert_rows(self, table: str, rows: list[dict]) -> None:
        """Rows as they are, ids included, in one statement run for each (the migration
        from SQLite): `embedding` in pgvector's text form or None; for episodes and memories,
        `index_text` is what full-text search sees. Then `finish_load`."""
        if not rows:
            return
        cols = [c for c in rows[0] if c != "index_text"]
        values = [sql.Placeholder(c) for c in cols]
        if "embedding" in cols:
            values[cols.index("embedding")] = sql.SQL("%(embedding)s::vector")
        if table in _TABLES:
            cols.append("tsv")
            values.append(sql.SQL("to_tsvector({}::regconfig, %(index_text)s)").format(sql.Literal(TS_CONFIG)))
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols)), sql.SQL(", ").join(values)
        )
        with self.transaction() as db, db.cursor() as cursor:
            cursor.executemany(query, rows)

    def finish_load(self) -> None:
        """After `insert_rows`: each table's next id after its largest, and the planner's
        statistics of the new rows."""
        with self.transaction() as db:
            for name in ID_TABLES:
                table = sql.Identifier(name)
                db.execute(
                    sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), (SELECT max(id) FROM {}))").format(
                        sql.Literal(name), table
                    )
                )
                db.execute(sql.SQL("ANALYZE {}").format(table))

    def _add(self, table: str, record, vector, index_text: str | None = None) -> int:
        row = asdict(record)
        given_id = row.pop("id")
        if given_id is not None:  # a given id is kept (imports)
            row["id"] = given_id
        if "source_ids" in row:
            row["source_ids"] = Jsonb(row["source_ids"])
        cols = [*row, "embedding", "tsv"]
        values = [sql.Placeholder(c) for c in row] + [
            sql.SQL("%(embedding)s::vector"),
            sql.SQL("to_tsvector(%(tsv_config)s::regconfig, %(index_text)s)"),
        ]
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols)), sql.SQL(", ").join(values)
        )
        with self.transaction() as db:
            embedding = self._check_dim(vector) if vector is not None else None
            params = {**row, "embedding": embedding, "tsv_config": TS_CONFIG, "index_text": index_text or record.text}
            rowid = db.execute(query, params).fetchone()["id"]
            if given_id is not None:  # the identity goes on after the largest id
                db.execute(
                    sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), (SELECT max(id) FROM {}))").format(
                        sql.Literal(table), sql.Identifier(table)
                    )
                )
        record.id = rowid
        return rowid

    def add_memories(self, memories: list[Memory], vectors) -> None:
        """Many memories in one transaction (imports, benchmarks)."""
        with self.transaction():
            for memory, vector in zip(memories, vectors):
                memory.id = None
                self._add("memories", memory, vector)

    def _get(self, table: str, ids: list[int]) -> list:
        if not ids:
            return []
        cls = _TABLES[table]
        cols = sql.SQL(", ").join(sql.Identifier(f.name) for f in fields(cls))
        rows = self._read(
            sql.SQL("SELECT {} FROM {} WHERE id = ANY(%s)").format(cols, sql.Identifier(table)), (list(ids),)
        )
        by_id = {r["id"]: cls(**r) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def search_text(self, table: str, query: str, k: int) -> list[tuple[int, float]]:
        """Full-text search, any of the query's words: (id, score), best first (higher is better)."""
        words = query_words(query)
        if not words:
            return []
        rows = self._read(
            sql.SQL(
                "SELECT id, ts_rank(tsv, q, 1) AS s FROM {}, {} WHERE tsv @@ q ORDER BY s DESC, id LIMIT %s"
            ).format(sql.Identifier(table), matching(words)),
            (*words, k),
        )
        return [(int(r["id"]), float(r["s"])) for r in rows]

    def search_vector(self, table: str, vector, k: int, exact: bool = False) -> list[tuple[int, float]]:
        """Nearest neighbours by cosine through the HNSW index: (id, similarity), best first.
        `exact`: every row scored instead, as SQLite does (to check a copy, not for recall)."""
        if self.meta("embed_dim") is None:
            return []
        embedding = self._check_dim(vector)
        if embedding is None:
            return []
        nearest = "SELECT id, embedding <=> %s::vector AS d FROM {} WHERE embedding IS NOT NULL ORDER BY d LIMIT %s"
        if exact:  # a materialized CTE is computed whole: no index can stop the scan early
            nearest = (
                "WITH scored AS MATERIALIZED "
                "(SELECT id, embedding <=> %s::vector AS d FROM {} WHERE embedding IS NOT NULL)"
                " SELECT id, d FROM scored ORDER BY d LIMIT %s"
            )
        with self.transaction() as db:  # SET LOCAL: for this search only
            db.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(min(max(k, 40), HNSW_EF_MAX)),))
            db.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")  # k past ef_search
            rows = db.execute(sql.SQL(nearest).format(sql.Identifier(table)), (embedding, k)).fetchall()
        hits = sorted(((int(r["id"]), float(r["d"])) for r in rows), key=lambda hit: (hit[1], hit[0]))  # ties by id
        return [(i, 1.0 - d) for i, d in hits]

    def _delete(self, table: str, rowid: int) -> bool:
        """Hard delete: the row, with its text index and vector."""
        with self.transaction() as db:
            return bool(
                db.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.Identifier(table)), (rowid,)).rowcount
            )

    # episodes

    def add_episode(self, episode: Episode, vector=None, index_text: str | None = None) -> int:
        """`index_text`: what full-text search sees, when not just the text (e.g. with the speaker)."""
        return self._add("episodes", episode, vector, index_text)

    def episodes(self, ids: list[int]) -> list[Episode]:
        return self._get("episodes", ids)

    def episodes_between(self, start: str, end: str, limit: int = 200) -> list[Episode]:
        rows = self._read(
            "SELECT id FROM episodes WHERE ts >= %s AND ts < %s ORDER BY ts LIMIT %s", (start, end, limit)
        )
        return self.episodes([r["id"] for r in rows])

    @_locked
    def replies(self, ids: list[int]) -> dict[int, Episode]:
        """For each episode, the next one in the same conversation or source within an
        hour, if any: the message that answered it."""
        found = {}
        for e in self.episodes(ids):
            # As SQLite's strftime(...) || 'z': the bound is an hour later, to the second.
            until = (datetime.fromisoformat(e.ts[:19]) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S") + "z"
            rows = self._read(
                "SELECT id FROM episodes WHERE id > %s AND source = %s"
                " AND coalesce(conversation_id, -1) = coalesce(%s, -1) "
                "AND ts <= %s ORDER BY id LIMIT 1",
                (e.id, e.source, e.conversation_id, until),
            )
            if rows:
                found[e.id] = self.episodes([rows[0]["id"]])[0]
        return found

    def recent_episode_ids(self, limit: int) -> list[int]:
        return [r["id"] for r in self._read("SELECT id FROM episodes ORDER BY ts DESC, id DESC LIMIT %s", (limit,))]

    def count_episodes(self) -> int:
        return self._read("SELECT count(*) AS n FROM episodes")[0]["n"]

    # memories

    def add_memory(self, memory: Memory, vector=None) -> int:
        return self._add("memories", memory, vector)

    def memories(self, ids: list[int]) -> list[Memory]:
        return self._get("memories", ids)

    def log_egress(self, destination: str, chars: int, redacted: dict[str, int]) -> None:
        self._insert("egress", {"ts": now(), "destination": destination, "chars": chars, "redacted": Jsonb(redacted)})

    def egress(self, limit: int = 100) -> list[dict]:
        return self._read("SELECT ts, destination, chars, redacted FROM egress ORDER BY id DESC LIMIT %s", (limit,))

    def person_names(self) -> list[str]:
        """Subjects of current memories other than the user: the people anima knows."""
        rows = self._read(
            "SELECT DISTINCT subject FROM memories"
            " WHERE valid_to IS NULL AND lower(subject) <> ALL(%s) AND subject <> ''",
            (list(USER_SUBJECTS),),
        )
        return [r["subject"] for r in rows]

    def list_memories(self, kind: str | None = None, include_invalid: bool = False, limit: int = 1000) -> list[Memory]:
        where, params = [sql.SQL("TRUE")], []
        if kind:
            where.append(sql.SQL("kind = %s"))
            params.append(kind)
        if not include_invalid:
            where.append(sql.SQL("valid_to IS NULL"))
        query = sql.SQL("SELECT id FROM memories WHERE {} ORDER BY id LIMIT %s").format(sql.SQL(" AND ").join(where))
        return self.memories([r["id"] for r in self._read(query, (*params, limit))])

    def profile_memories(self, limit: int) -> list[Memory]:
        """The current memories `in_profile`, best first by `profile_rank` (ties: oldest
        first). SQL narrows to the candidates `in_profile` names; Python decides."""
        rows = self._read(
            "SELECT id, subject, kind, text, confidence, updated_at FROM memories WHERE valid_to IS NULL"
            " AND (lower(subject) = ANY(%s) OR lower(text) LIKE %s) ORDER BY id",
            (list(USER_SUBJECTS), "%name is%"),
        )
        best = heapq.nlargest(limit, filter(in_profile, rows), key=profile_rank)
        return self.memories([r["id"] for r in best])

    def update_memory(self, memory: Memory, vector=None) -> None:
        """Change a memory in place (the user's own edit); `vector` when the text changed."""
        memory.updated_at = now()
        row = asdict(memory)
        del row["id"]
        row["source_ids"] = Jsonb(row["source_ids"])
        sets = [sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c)) for c in row]
        sets.append(sql.SQL("tsv = to_tsvector({}::regconfig, %(text)s)").format(sql.Literal(TS_CONFIG)))
        with self.transaction() as db:
            if vector is not None:  # new text, new vector (or none, for text without words)
                row["embedding"] = self._check_dim(vector)
                sets.append(sql.SQL("embedding = %(embedding)s::vector"))
            db.execute(
                sql.SQL("UPDATE memories SET {} WHERE id = %(id)s").format(sql.SQL(", ").join(sets)),
                {**row, "id": memory.id},
            )

    def invalidate_memory(self, memory_id: int, when: str | None = None) -> None:
        self._update("memories", {"valid_to": when or now(), "updated_at": now()}, id=memory_id)

    def delete_memory(self, memory_id: int) -> bool:
        return self._delete("memories", memory_id)

    def delete_episode(self, episode_id: int) -> bool:
        return self._delete("episodes", episode_id)


class PgNotes(Notes):
    """Notes whose words are a generated `tsv` column: the server keeps it."""

    def _index(self, note_id: int, title: str, text: str) -> None:
        pass

    def _unindex(self, note_id: int) -> None:
        pass

    def search(self, query: str, k: int) -> list[dict]:
        words = query_words(query)
        if not words:
            return []
        return self._store._read(
            sql.SQL(
                "SELECT id, title, text, created_at, ts_rank(tsv, q, 1) AS score FROM notes, {}"
                " WHERE tsv @@ q ORDER BY score DESC, id LIMIT %s"
            ).format(matching(words)),
            (*words, k),
        )


class PgDocuments(Documents):
    def search(self, query: str, k: int) -> list[dict]:
        """As SQLite's: matches in [brackets] in the snippet (`ts_headline`)."""
        words = query_words(query)
        if not words:
            return []
        options = 'StartSel=[, StopSel=], MaxWords=24, MinWords=8, ShortWord=0, MaxFragments=2, FragmentDelimiter=" … "'
        return self._store._read(
            sql.SQL(
                "SELECT path, cite, line_start, line_end, text, ts_rank(tsv, q, 1) AS score,"
                " ts_headline({}::regconfig, text, q, {}) AS snippet"
                " FROM doc_passages, {} WHERE tsv @@ q ORDER BY score DESC, id LIMIT %s"
            ).format(sql.Literal(TS_CONFIG), sql.Literal(options), matching(words)),
            (*words, k),
        )
