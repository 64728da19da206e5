"""Calendar events (`events`): title, start and end as wall-clock text in the event's own
zone (`tz`, or none for floating times and whole days), location, description, and for a
repeating event its RRULE and the starts it skips (`exdates`, a list). Each has a unique
`uid`; adding one with a known uid replaces it. Expanding rules is `anima.tools.calendar`'s."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anima.store.store import Store

COLUMNS = ("uid", "title", "start", "end", "tz", "location", "description", "rrule", "exdates")


def _event(row: dict) -> dict:
    return {**row, "exdates": json.loads(row["exdates"])}


class Calendar:
    def __init__(self, store: Store):
        self._store = store

    def upsert(self, events: list[dict]) -> None:
        """Add the events (dicts with the COLUMNS), all or none; one whose uid is known replaces it."""
        with self._store.transaction():
            for event in events:
                row = {c: event[c] for c in COLUMNS}
                row["exdates"] = json.dumps(row["exdates"])
                self._store._insert("events", row, conflict="uid", replace=[c for c in COLUMNS if c != "uid"])

    def all(self) -> list[dict]:
        """Every event (id and the COLUMNS), by start."""
        return [_event(r) for r in self._store._select("SELECT * FROM events ORDER BY start, id")]

    def candidates(self, start: str, end: str) -> list[dict]:
        """The events that may fall in [start, end): every repeating one, and the others
        that start before `end` and end at or after `start` (wall times compared as text)."""
        sql = 'SELECT * FROM events WHERE rrule IS NOT NULL OR (start < ? AND "end" >= ?) ORDER BY start, id'
        rows = self._store._select(sql, (end, start))
        return [_event(r) for r in rows]
