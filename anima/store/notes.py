"""Notes: short texts the user keeps (`notes`), each with an optional title, and their
words in a full-text index to find them by (SQLite: `fts_notes`, BM25; PostgreSQL: a
`tsv` column, `pg.PgNotes`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from anima.store.sql import fts_query, now

if TYPE_CHECKING:
    from anima.store.store import Store


class Notes:
    def __init__(self, store: Store):
        self._store = store

    def add(self, title: str, text: str) -> int:
        """A new note; returns its id."""
        with self._store.transaction():
            note_id = self._store._insert("notes", {"title": title, "text": text, "created_at": now()})
            self._index(note_id, title, text)
        return note_id

    def _index(self, note_id: int, title: str, text: str) -> None:
        self._store._insert("fts_notes", {"rowid": note_id, "text": f"{title}\n{text}"})

    def latest(self, limit: int) -> list[dict]:
        """Notes (id, title, text, created_at), newest first."""
        return self._store._select("SELECT id, title, text, created_at FROM notes ORDER BY id DESC LIMIT ?", (limit,))

    def search(self, query: str, k: int) -> list[dict]:
        """Notes sharing words with the query, best first, each with a `score` (higher is better)."""
        q = fts_query(query)
        if not q:
            return []
        rows = self._store._select(
            "SELECT n.id, n.title, n.text, n.created_at, bm25(fts_notes) AS s "
            "FROM fts_notes JOIN notes n ON n.id = fts_notes.rowid WHERE fts_notes MATCH ? ORDER BY s LIMIT ?",
            (q, k),
        )
        for r in rows:
            r["score"] = -r.pop("s")
        return rows

    def delete(self, note_id: int) -> bool:
        """False when there is no such note."""
        with self._store.transaction():
            if not self._store._write("DELETE FROM notes WHERE id = ?", (note_id,)):
                return False
            self._unindex(note_id)
        return True

    def _unindex(self, note_id: int) -> None:
        self._store._write("DELETE FROM fts_notes WHERE rowid = ?", (note_id,))
