"""Notes: short texts the user keeps (`notes`), each with an optional title, and their
words in a full-text index (`fts_notes`, BM25) to find them by."""

from __future__ import annotations

from typing import TYPE_CHECKING

from anima.store.sql import fts_query, insert, now

if TYPE_CHECKING:
    from anima.store.store import Store


class Notes:
    def __init__(self, store: Store):
        self._store = store

    def add(self, title: str, text: str) -> int:
        """A new note; returns its id."""
        with self._store.transaction() as db:
            note_id = insert(db, "notes", {"title": title, "text": text, "created_at": now()})
            insert(db, "fts_notes", {"rowid": note_id, "text": f"{title}\n{text}"})
        return note_id

    def latest(self, limit: int) -> list[dict]:
        """Notes (id, title, text, created_at), newest first."""
        return self._store._read("SELECT id, title, text, created_at FROM notes ORDER BY id DESC LIMIT ?", (limit,))

    def search(self, query: str, k: int) -> list[dict]:
        """Notes sharing words with the query, best first, each with a `score` (higher is better)."""
        q = fts_query(query)
        if not q:
            return []
        rows = self._store._read(
            "SELECT n.id, n.title, n.text, n.created_at, bm25(fts_notes) AS s "
            "FROM fts_notes JOIN notes n ON n.id = fts_notes.rowid WHERE fts_notes MATCH ? ORDER BY s LIMIT ?",
            (q, k),
        )
        for r in rows:
            r["score"] = -r.pop("s")
        return rows

    def delete(self, note_id: int) -> bool:
        """False when there is no such note."""
        with self._store.transaction() as db:
            if not db.execute("DELETE FROM notes WHERE id = ?", (note_id,)).rowcount:
                return False
            db.execute("DELETE FROM fts_notes WHERE rowid = ?", (note_id,))
        return True
