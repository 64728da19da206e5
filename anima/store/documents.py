"""The index of the user's documents: each file read (`doc_files`: path, the folder it was
indexed under, mtime, size) and its passages in a full-text index (`doc_passages`: path,
cite, chunk number, first and last line, text; BM25). The files themselves are never
stored, and reading them is `anima.tools.documents`'s."""

from __future__ import annotations

from typing import TYPE_CHECKING

from anima.store.sql import fts_query

if TYPE_CHECKING:
    from anima.store.store import Store


class Documents:
    def __init__(self, store: Store):
        self._store = store

    def files(self) -> dict[str, tuple[float, int]]:
        """Every indexed file: path -> (mtime, size)."""
        rows = self._store._select("SELECT path, mtime, size FROM doc_files")
        return {r["path"]: (r["mtime"], r["size"]) for r in rows}

    def count(self) -> int:
        return self._store._select("SELECT count(*) AS n FROM doc_files")[0]["n"]

    def put(
        self, path: str, root: str, mtime: float, size: int, cite: str, passages: list[tuple[int, int, str]]
    ) -> None:
        """A file's passages, (first line, last line, text) in order, in place of those it had;
        `root`: the folder it was indexed under; `cite`: how it is named in answers."""
        with self._store.transaction():
            self._store._write("DELETE FROM doc_passages WHERE path = ?", (path,))
            for chunk, (first, last, text) in enumerate(passages):
                row = {"path": path, "cite": cite, "chunk": chunk, "line_start": first, "line_end": last, "text": text}
                self._store._insert("doc_passages", row)
            row = {"path": path, "root": root, "mtime": mtime, "size": size}
            self._store._insert("doc_files", row, conflict="path", replace=["root", "mtime", "size"])

    def remove(self, paths: list[str]) -> None:
        """Forget these files and their passages."""
        with self._store.transaction():
            for path in paths:
                self._store._write("DELETE FROM doc_passages WHERE path = ?", (path,))
                self._store._write("DELETE FROM doc_files WHERE path = ?", (path,))

    def search(self, query: str, k: int) -> list[dict]:
        """Passages sharing words with the query, best first: path, cite, line_start,
        line_end, text, snippet (matches in [brackets]) and score (higher is better)."""
        q = fts_query(query)
        if not q:
            return []
        rows = self._store._select(
            "SELECT path, cite, line_start, line_end, text, bm25(doc_passages) AS s, "
            "snippet(doc_passages, 5, '[', ']', ' … ', 24) AS snippet "
            "FROM doc_passages WHERE doc_passages MATCH ? ORDER BY s LIMIT ?",
            (q, k),
        )
        for r in rows:
            r["score"] = -r.pop("s")
        return rows
