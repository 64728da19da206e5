"""`anima store migrate --to postgresql://...`: one user's store copied from their
SQLCipher file into their PostgreSQL schema (`pg.py`), then checked.

What is copied: conversations, turns, episodes and memories (their vectors, validity
and provenance, and the text full-text search sees), the egress log and the meta
values; and every other table (notes, goals and milestones, calendar events, the
document index, reminders, the inbox, the scheduler's jobs, the learner's queue), whose
full text PostgreSQL makes itself. Ids are kept, so a memory's `source_ids` still name
its episodes and a turn its conversation; each table's next id then follows the largest
copied.

The copy is one transaction on PostgreSQL, and the file is read in one transaction too
(a consistent view; other writers wait). The user's schema must hold nothing yet: a
migration never merges. The vectors are indexed (HNSW) after they are all in, which is
faster than growing the graph row by row.

The check runs inside the same transaction, and a copy that fails it is rolled back:
PostgreSQL keeps nothing, and the report says what differed. It asks:

- rows per table, and rows with a vector, are as many on both sides;
- the sampled records (SAMPLES per table, seeded) read back equal;
- vector search, each sampled row's own vector as the query, top K, every row scored on
  PostgreSQL as in SQLite: the same ids in the same order (`same_hits`), where hits whose
  similarities are within TIE of each other (the backends compute cosine in a different
  float order) may come in either order, and a run of ties cut at the K-th place may be
  cut at different ids. The same search through the HNSW index, which recall uses, is
  reported, not checked: it is approximate (at 20k rows, about 1 query in 30 misses a
  neighbour);
- text search, each sampled row's text as the query: the row is among the matches on
  both sides. Not checked, only reported: whether all matches are the same rows, and how
  many of the top K are. They differ by design: SQLite stems with Porter and PostgreSQL
  with Snowball (in "thankfully", "us", "ones" they differ, so a query matches a few rows
  more or fewer), and ranks by BM25 where PostgreSQL ranks by ts_rank.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from anima.errors import BadInput, StoreError
from anima.store import open_store, user_db_path
from anima.store.db import is_plain
from anima.store.store import Store

if TYPE_CHECKING:
    from anima.store.pg import PgStore

CORE = ("conversations", "turns", "episodes", "memories", "egress")  # in the order their references need
TABLES = (
    "notes",
    "goals",
    "milestones",
    "events",
    "doc_files",
    "doc_passages",
    "reminders",
    "inbox",
    "jobs",
    "learn_queue",
)
KEYS = {"jobs": "name", "doc_files": "path", "learn_queue": "episode_id"}  # else: id
SAMPLES, K, TIE, SEED = 20, 10, 1e-5, 0
CHUNK = 1000

Progress = Callable[[str, int, int], None]


@dataclass
class Check:
    """One line of the check: what was compared, its two sides, and whether they agree
    (always, for a line that is only reported)."""

    what: str
    sqlite: str
    postgres: str
    ok: bool
    checked: bool = True


@dataclass
class Migration:
    user: str
    schema: str
    rows: dict[str, int]  # copied, per table
    load_s: float
    index_s: float
    checks: list[Check] = field(default_factory=list)
    committed: bool = False

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def migrate_to_postgres(data_dir: Path, user: str, url: str, progress: Progress | None = None) -> Migration:
    """Copy `user`'s store in `data_dir` into their schema at `url`, check the copy, and
    commit it if the check passes."""
    with open_stores(data_dir, user, url) as (source, target):
        return copy_store(source, target, progress)


@contextlib.contextmanager
def open_stores(data_dir: Path, user: str, url: str) -> Iterator[tuple[Store, PgStore]]:
    """`user`'s store in `data_dir` and their schema at `url`, closed after; a StoreError
    first when either cannot be opened, or the schema holds data already."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise BadInput(
            f"--to must be a postgresql:// URL, not {url.split(':', 1)[0]!r}", "e.g. postgresql://anima@localhost/anima"
        )
    path = user_db_path(data_dir, user)
    if not path.is_file() or not path.stat().st_size:
        raise StoreError(f"no store to migrate: {path} does not exist", "check ANIMA_HOME, and `user` in the config")
    source = open_store(
        data_dir, user, encrypt=not is_plain(path)
    )  # opened as it is: a plain file is not encrypted first
    try:
        from anima.store.pg import PgStore  # a missing psycopg is a StoreError

        target = PgStore(url, user)
        try:
            refuse_unless_empty(target)
            yield source, target
        finally:
            target.close()
    finally:
        source.close()


def copy_store(
    source: Store, target: PgStore, progress: Progress | None = None, vector_index: str = "hnsw", check: bool = True
) -> Migration:
    """Every table of `source` into the empty PgStore `target`, in one transaction, with
    the check above (unless `check` is False: `anima bench memory-scale` copies a store it
    has just made)."""
    report = Migration(target.user, target.schema, rows={}, load_s=0.0, index_s=0.0)
    committed = False
    with source.transaction(), target.transaction():
        refuse_unless_empty(target)  # again: another process may have written since
        t0 = time.perf_counter()
        for table in (*CORE, *TABLES):
            report.rows[table] = _copy_table(source, target, table, progress)
        meta = {r["key"]: r["value"] for r in source._read("SELECT key, value FROM _anima_meta")}
        for key, value in meta.items():
            if key != "embed_dim":  # set by index_vectors, with the columns it types
                target.set_meta(key, value)
        report.load_s = time.perf_counter() - t0
        if progress:
            progress("index vectors", 0, 1)
        t0 = time.perf_counter()
        if "embed_dim" in meta:
            target.index_vectors(int(meta["embed_dim"]), vector_index)
        target.finish_load()
        report.index_s = time.perf_counter() - t0
        if progress:
            progress("index vectors", 1, 1)
        if check:
            report.checks = verify(source, target, progress)
        committed = report.ok
        if not committed:
            import psycopg

            raise psycopg.Rollback()  # ends the PostgreSQL transaction without an error: nothing is kept
    report.committed = committed
    return report


def refuse_unless_empty(target: PgStore) -> None:
    held = {t: n for t in (*CORE, *TABLES, "_anima_meta") if (n := _count(target, t))}
    if held:
        from anima.store.pg_db import where

        listed = ", ".join(f"{n} {t}" for t, n in held.items())
        raise StoreError(
            f"the PostgreSQL schema {target.schema} at {where(target.url)} already holds data ({listed}); "
            "nothing was copied",
            "a migration only fills an empty schema: migrate another user, or remove this one's data first",
        )


def _count(store, table: str, where: str = "TRUE") -> int:
    """Rows of a table, on either backend (the SQL is the same)."""
    return store._read(f"SELECT count(*) AS n FROM {table} WHERE {where}")[0]["n"]


def _read_rows(source: Store, table: str) -> Iterator[list[dict]]:
    """The table's rows in chunks, oldest first; episodes and memories with the text their
    full-text index holds (an episode's may name its speaker) and the vector as text."""
    query = f"SELECT * FROM {table} ORDER BY {KEYS.get(table, 'id')}"
    if table == "doc_passages":  # an FTS5 table: its id is the rowid
        query = "SELECT rowid AS id, path, cite, chunk, line_start, line_end, text FROM doc_passages ORDER BY rowid"
    if table in ("episodes", "memories"):
        query = (
            f"SELECT t.*, coalesce(f.text, t.text) AS index_text FROM {table} t "
            f"LEFT JOIN fts_{table} f ON f.rowid = t.id ORDER BY t.id"
        )
    cursor = source.db.execute(query)
    while rows := cursor.fetchmany(CHUNK):
        chunk = [dict(r) for r in rows]
        for row in chunk:
            if "embedding" in row:
                row["embedding"] = _vector_text(row["embedding"])
        yield chunk


def _vector_text(blob: bytes | None) -> str | None:
    """pgvector's text form of a stored float32 vector, each value exactly (not normalised
    again: it was when stored)."""
    return None if blob is None else str(np.frombuffer(blob, dtype=np.float32).tolist())


def _copy_table(source: Store, target, table: str, progress: Progress | None) -> int:
    total, done = _count(source, table), 0
    if progress:
        progress(table, 0, total)
    for chunk in _read_rows(source, table):
        target.insert_rows(table, chunk)
        done += len(chunk)
        if progress:
            progress(table, done, total)
    return done


# --- the check -------------------------------------------------------------------------


def verify(source: Store, target, progress: Progress | None = None) -> list[Check]:
    checks = []
    for table in (*CORE, *TABLES, "_anima_meta"):
        a, b = _count(source, table), _count(target, table)
        checks.append(Check("meta values" if table == "_anima_meta" else table, str(a), str(b), a == b))
    for table in ("episodes", "memories"):
        a, b = _count(source, table, "embedding IS NOT NULL"), _count(target, table, "embedding IS NOT NULL")
        checks.append(Check(f"{table} with a vector", str(a), str(b), a == b))
    for table in ("episodes", "memories"):
        checks += _check_searches(source, target, table, progress)
    return checks


def _check_searches(source: Store, target, table: str, progress: Progress | None) -> list[Check]:
    ids = [r["id"] for r in source._read(f"SELECT id FROM {table} ORDER BY id")]
    sample = sorted(random.Random(SEED).sample(ids, min(SAMPLES, len(ids))))
    get = source.episodes if table == "episodes" else source.memories
    get_pg = target.episodes if table == "episodes" else target.memories
    records = get(sample)
    same_records = sum(a == b for a, b in zip(records, get_pg(sample)))
    everything = len(ids)
    found = same_matches = common = exact_same = hnsw_same = vectors = 0
    for n, record in enumerate(records):
        a, b = source.search_text(table, record.text, everything), target.search_text(table, record.text, everything)
        found += record.id in {i for i, _ in a} and record.id in {i for i, _ in b}
        same_matches += {i for i, _ in a} == {i for i, _ in b}
        common += len({i for i, _ in a[:K]} & {i for i, _ in b[:K]})
        vector = _stored_vector(source, table, record.id)
        if vector is not None:
            vectors += 1
            want = source.search_vector(table, vector, K + 1)
            exact_same += same_hits(want, target.search_vector(table, vector, K + 1, exact=True), K)
            hnsw_same += same_hits(want, target.search_vector(table, vector, K + 1), K)
        if progress:
            progress(f"check {table}", n + 1, len(records))
    asked = len(records)
    return [
        Check(f"{table}: sampled records equal", f"{asked} read", f"{same_records} equal", same_records == asked),
        Check(
            f"{table}: vector search, top {K}, every row scored",
            f"{vectors} queries",
            f"{exact_same} the same",
            exact_same == vectors,
        ),
        Check(
            f"{table}: vector search, top {K}, HNSW", f"{vectors} queries", f"{hnsw_same} the same", True, checked=False
        ),
        Check(
            f"{table}: text search finds the row by its text",
            f"{asked} queries",
            f"{found} found on both",
            found == asked,
        ),
        Check(
            f"{table}: text search, all matches", f"{asked} queries", f"{same_matches} the same", True, checked=False
        ),
        Check(f"{table}: text search, top {K}", f"{asked * K} ids", f"{common} in common", True, checked=False),
    ]


def _stored_vector(source: Store, table: str, rowid: int) -> np.ndarray | None:
    blob = source._read(f"SELECT embedding FROM {table} WHERE id = ?", (rowid,))[0]["embedding"]
    return None if blob is None else np.frombuffer(blob, dtype=np.float32)


def same_hits(a: list[tuple[int, float]], b: list[tuple[int, float]], k: int, tie: float = TIE) -> bool:
    """Whether two searches, each asked for k + 1 hits of (id, score) best first, agree on
    their top k: the same scores, and the same ids in the same order, except that ids whose
    scores are within `tie` of each other (a run of ties) may come in either order, and a
    run that the k-th place cuts (it goes on at k + 1) may be cut at different ids."""
    if len(a) != len(b) or any(abs(x[1] - y[1]) > tie for x, y in zip(a, b)):
        return False
    start = 0
    for end in range(1, len(a) + 1):  # each run of tied scores is a[start:end]
        if end == len(a) or a[end][1] < a[end - 1][1] - tie:
            if end <= k and {i for i, _ in a[start:end]} != {i for i, _ in b[start:end]}:
                return False
            start = end
    return True
