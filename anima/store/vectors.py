"""Nearest-neighbour search over the `embedding` column of a table, two ways:

- `SqliteVecIndex`: a sqlite-vec `vec0` table per indexed table (exact KNN in SQL,
  inside the encrypted file);
- `NumpyIndex`: brute force over the embeddings, read once and cached in memory.

Both are exact and return `(rowid, cosine distance)` nearest first, so they give the
same results; the `embedding` BLOB (float32, L2-normalised) is the source of truth
and the vec0 table is an index rebuilt from it whenever they disagree.
"""

from __future__ import annotations

import numpy as np

from anima.store.db import Connection, transaction


def to_blob(vector) -> bytes | None:
    """float32 bytes of the L2-normalised vector; None for a zero vector, which has no
    direction to compare (text with no words): such a row is left out of vector search."""
    v = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    return (v / norm).astype(np.float32).tobytes() if norm > 0 and np.isfinite(norm) else None


class NumpyIndex:
    name = "numpy"

    def __init__(self, db: Connection):
        self.db = db
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def sync(self, table: str, dim: int) -> None:
        self._cache.pop(table, None)

    def upsert(self, table: str, rowid: int, blob: bytes) -> None:
        self._cache.pop(table, None)

    def delete(self, table: str, rowid: int) -> None:
        self._cache.pop(table, None)

    def search(self, table: str, blob: bytes, k: int) -> list[tuple[int, float]]:
        if table not in self._cache:
            rows = self.db.execute(f"SELECT id, embedding FROM {table} WHERE embedding IS NOT NULL").fetchall()
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1) if rows else np.zeros((0, 1), np.float32)
            self._cache[table] = (ids, matrix)
        ids, matrix = self._cache[table]
        if not len(ids):
            return []
        distances = 1.0 - matrix @ np.frombuffer(blob, dtype=np.float32)
        top = np.argsort(distances, kind="stable")[:k]
        return [(int(ids[i]), float(distances[i])) for i in top]


class SqliteVecIndex:
    name = "sqlite-vec"

    def __init__(self, db: Connection):
        self.db = db

    def sync(self, table: str, dim: int) -> None:
        """Create `vec_<table>` if needed and rebuild it when it disagrees with the table."""
        vec = f"vec_{table}"
        exists = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (vec,)).fetchone()
        if exists:
            want = self.db.execute(f"SELECT count(*), coalesce(sum(id), 0) FROM {table} WHERE embedding IS NOT NULL").fetchone()
            have = self.db.execute(f"SELECT count(*), coalesce(sum(rowid), 0) FROM {vec}").fetchone()
            same_dim = f"float[{dim}]" in self.db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (vec,)).fetchone()[0]
            if tuple(want) == tuple(have) and same_dim:
                return
        with transaction(self.db):
            self.db.execute(f"DROP TABLE IF EXISTS {vec}")
            self.db.execute(f"CREATE VIRTUAL TABLE {vec} USING vec0(embedding float[{dim}] distance_metric=cosine)")
            self.db.execute(f"INSERT INTO {vec}(rowid, embedding) SELECT id, embedding FROM {table} WHERE embedding IS NOT NULL")

    def upsert(self, table: str, rowid: int, blob: bytes) -> None:
        self.db.execute(f"DELETE FROM vec_{table} WHERE rowid = ?", (rowid,))
        self.db.execute(f"INSERT INTO vec_{table}(rowid, embedding) VALUES (?, ?)", (rowid, blob))

    def delete(self, table: str, rowid: int) -> None:
        self.db.execute(f"DELETE FROM vec_{table} WHERE rowid = ?", (rowid,))

    def search(self, table: str, blob: bytes, k: int) -> list[tuple[int, float]]:
        rows = self.db.execute(f"SELECT rowid, distance FROM vec_{table} WHERE embedding MATCH ? AND k = ? ORDER BY distance", (blob, min(k, 4096)))
        return sorted(((int(r[0]), float(r[1])) for r in rows), key=lambda hit: (hit[1], hit[0]))  # ties by id, as numpy
