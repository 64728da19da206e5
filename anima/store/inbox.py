"""The inbox (`inbox`): what anima raised on its own, one row per item: kind, title,
body, why it was raised, `data` (a dict), relevance, when, the user's status and snooze
time, and whether it was pushed. A `key` (what the item is about) is unique: an item
whose key is there already is not added again. What the items mean is
`anima.proactive.inbox`'s."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anima.store.store import Store


def _item(row: dict) -> dict:
    return {**row, "data": json.loads(row["data"])}


class Inbox:
    def __init__(self, store: Store):
        self._store = store

    def add(self, item: dict) -> int | None:
        """A new item (its columns, `data` a dict); its id, or None when one with the same key is there."""
        row = {**item, "data": json.dumps(item["data"], ensure_ascii=False, default=str)}
        return self._store._insert("inbox", row, conflict="key")

    def get(self, item_id: int) -> dict | None:
        found = self._store._select("SELECT * FROM inbox WHERE id = ?", (item_id,))
        return _item(found[0]) if found else None

    def update(self, item_id: int, expect: dict | None = None, **changes) -> bool:
        """Set some columns: status, snooze_until, acted_at, notify, notified_at...; with
        `expect` (column -> value), only while the item still has those values (so that of
        two processes one makes the change). False when nothing changed."""
        return bool(self._store._update("inbox", changes, **(expect or {}), id=item_id))

    def list(self, status: str | None = None, kind: str | None = None, limit: int = 200) -> list[dict]:
        """Items, newest first; of one status and/or kind if given."""
        where, params = ["1 = 1"], []
        for column, value in (("status", status), ("kind", kind)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT * FROM inbox WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?"
        rows = self._store._select(sql, (*params, limit))
        return [_item(r) for r in rows]
