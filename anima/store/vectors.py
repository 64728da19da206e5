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
    """Each table's vectors in a matrix in memory, read from the file at the first search
    and then kept in step with this connection's writes (an insert appends a row, a delete
    moves the last row into its place), so a search after a new message does not read the
    table again. It is read again when another connection has committed (`PRAGMA
    data_version` moved) or a transaction of this one was rolled back (`reset`)."""

    name = "numpy"

    def __init__(self, db: Connection):
        self.db = db
        self._cache: dict[str, _Rows] = {}
        self._version = None

    def sync(self, table: str, dim: int) -> None:
        self._cache.pop(table, None)

    def reset(self) -> None:
        self._cache.clear()

    def upsert(self, table: str, rowid: int, blob: bytes) -> None:
        if (rows := self._cache.get(table)) is not None and not rows.put(rowid, np.frombuffer(blob, dtype=np.float32)):
            del self._cache[table]  # another dimension: read again

    def delete(self, table: str, rowid: int) -> None:
        if (rows := self._cache.get(table)) is not None:
            rows.drop(rowid)

    def search(self, table: str, blob: bytes, k: int) -> list[tuple[int, float]]:
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:  # another connection wrote to the file
            self._cache.clear()
            self._version = version
        if (rows := self._cache.get(table)) is None:
            found = self.db.execute(
                f"SELECT id, embedding FROM {table} WHERE embedding IS NOT NULL ORDER BY id"
            ).fetchall()
            rows = self._cache[table] = _Rows.read(found)
        return rows.nearest(np.frombuffer(blob, dtype=np.float32), k)


class _Rows:
    """Row ids and their vectors, with room to grow (doubling)."""

    def __init__(self, ids: np.ndarray, matrix: np.ndarray):
        self.n = len(ids)
        self.ids, self.matrix = ids, matrix
        self.where = {int(i): n for n, i in enumerate(ids)}

    @classmethod
    def read(cls, rows) -> _Rows:
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        matrix = (
            np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
            if rows
            else np.zeros((0, 0), np.float32)
        )
        return cls(ids, matrix.copy())  # writable: rows are added in place

    def put(self, rowid: int, vector: np.ndarray) -> bool:
        """Add or replace a row; False when the vector's dimension is not the matrix's."""
        if self.n and len(vector) != self.matrix.shape[1]:
            return False
        if (at := self.where.get(rowid)) is None:
            if self.n == len(self.ids) or len(vector) != self.matrix.shape[1]:  # full, or empty of another dimension
                grown = max(16, 2 * self.n)
                ids, matrix = np.zeros(grown, np.int64), np.zeros((grown, len(vector)), np.float32)
                if self.n:
                    ids[: self.n], matrix[: self.n] = self.ids[: self.n], self.matrix[: self.n]
                self.ids, self.matrix = ids, matrix
            at = self.where[rowid] = self.n
            self.ids[at] = rowid
            self.n += 1
        self.matrix[at] = vector
        return True

    def drop(self, rowid: int) -> None:
        if (at := self.where.pop(rowid, None)) is None:
            return
        last = self.n - 1
        if at != last:
            self.ids[at], self.matrix[at] = self.ids[last], self.matrix[last]
            self.where[int(self.ids[at])] = at
        self.n = last

    def nearest(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The k nearest by cosine distance, ties by id (rows are not in id order)."""
        if not self.n or k < 1:
            return []
        distances = 1.0 - self.matrix[: self.n] @ query
        if k < self.n:  # every row as near as the k-th, so a tie there is cut by id
            kth = np.partition(distances, k - 1)[k - 1]
            chosen = np.flatnonzero(distances <= kth)
        else:
            chosen = np.arange(self.n)
        ids = self.ids[chosen]
        order = np.lexsort((ids, distances[chosen]))[:k]
        return [(int(ids[i]), float(distances[chosen][i])) for i in order]


class SqliteVecIndex:
    name = "sqlite-vec"

    def __init__(self, db: Connection):
        self.db = db

    def sync(self, table: str, dim: int) -> None:
        """Create `vec_<table>` if needed and rebuild it when it disagrees with the table."""
        vec = f"vec_{table}"
        exists = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (vec,)).fetchone()
        if exists:
            want = self.db.execute(
                f"SELECT count(*), coalesce(sum(id), 0) FROM {table} WHERE embedding IS NOT NULL"
            ).fetchone()
            have = self.db.execute(f"SELECT count(*), coalesce(sum(rowid), 0) FROM {vec}").fetchone()
            same_dim = (
                f"float[{dim}]" in self.db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (vec,)).fetchone()[0]
            )
            if tuple(want) == tuple(have) and same_dim:
                return
        with transaction(self.db):
            self.db.execute(f"DROP TABLE IF EXISTS {vec}")
            self.db.execute(f"CREATE VIRTUAL TABLE {vec} USING vec0(embedding float[{dim}] distance_metric=cosine)")
            self.db.execute(
                f"INSERT INTO {vec}(rowid, embedding) SELECT id, embedding FROM {table} WHERE embedding IS NOT NULL"
            )

    def reset(self) -> None:
        """Nothing to do: the index is in the file, and a rollback undoes it too."""

    def upsert(self, table: str, rowid: int, blob: bytes) -> None:
        self.db.execute(f"DELETE FROM vec_{table} WHERE rowid = ?", (rowid,))
        self.db.execute(f"INSERT INTO vec_{table}(rowid, embedding) VALUES (?, ?)", (rowid, blob))

    def delete(self, table: str, rowid: int) -> None:
        self.db.execute(f"DELETE FROM vec_{table} WHERE rowid = ?", (rowid,))

    def search(self, table: str, blob: bytes, k: int) -> list[tuple[int, float]]:
        rows = self.db.execute(
            f"SELECT rowid, distance FROM vec_{table} WHERE embedding MATCH ? AND k = ? ORDER BY distance",
            (blob, min(k, 4096)),
        )
        return sorted(
            ((int(r[0]), float(r[1])) for r in rows), key=lambda hit: (hit[1], hit[0])
        )  # ties by id, as numpy
