"""Reminders and to-dos, one table (`reminders`; `kind` tells them apart): the text, the
next time it is due and the repeat rule as written (both optional for a to-do), the
status (open | done | cancelled), the due time that last fired, and when it was made and
closed. Times are ISO 8601 text with an offset; reading and moving them on is
`anima.tools.reminders`'s."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anima.store.store import Store


class Reminders:
    def __init__(self, store: Store):
        self._store = store

    def get(self, reminder_id: int) -> dict | None:
        """id, kind, text, due, every, status, fired, created_at, done_at; None when there is none."""
        found = self._store._select("SELECT * FROM reminders WHERE id = ?", (reminder_id,))
        return found[0] if found else None

    def add(self, kind: str, text: str, due: str | None, every: str | None, created_at: str) -> int:
        """A new open reminder or to-do; returns its id."""
        row = {"kind": kind, "text": text, "due": due, "every": every, "created_at": created_at}
        return self._store._insert("reminders", row)

    def update(self, reminder_id: int, **changes) -> None:
        """Set some of: text, due, every, status, fired, done_at."""
        self._store._update("reminders", changes, id=reminder_id)

    def list(self, kind: str | None = None, include_closed: bool = False) -> list[dict]:
        """Of one kind (both when None), open ones only unless `include_closed`; oldest first."""
        where, params = ["1 = 1"], []
        if kind:
            where.append("kind = ?")
            params.append(kind)
        if not include_closed:
            where.append("status = 'open'")
        return self._store._select(f"SELECT * FROM reminders WHERE {' AND '.join(where)} ORDER BY id", params)
