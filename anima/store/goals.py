"""Goals (`goals`: title, why, due day, status, progress set by hand) and their ordered
milestones (`milestones`: position 1, 2, ..., title, when done). What progress a goal
shows is the tools' business (`anima.tools.goals`); this keeps the rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from anima.store.sql import now

if TYPE_CHECKING:
    from anima.store.store import Store


class Goals:
    def __init__(self, store: Store):
        self._store = store

    def get(self, goal_id: int) -> dict | None:
        """id, title, why, due, status, progress, created_at, updated_at and milestones
        [{position, title, done_at}] in order; None when there is no such goal."""
        with self._store._lock:  # the goal and its milestones as of one moment
            found = self._store._select("SELECT * FROM goals WHERE id = ?", (goal_id,))
            if not found:
                return None
            steps = self._store._select(
                "SELECT position, title, done_at FROM milestones WHERE goal_id = ? ORDER BY position", (goal_id,)
            )
        return {**found[0], "milestones": steps}

    def list(self, status: str | None = None) -> list[dict]:
        """Goals with that status (all when None), as `get`: soonest due first, undated
        last, then oldest."""
        with self._store._lock:
            where, params = ("status = ?", (status,)) if status else ("1 = 1", ())
            rows = self._store._select(f"SELECT id FROM goals WHERE {where} ORDER BY due IS NULL, due, id", params)
            ids = [r["id"] for r in rows]
            return [self.get(i) for i in ids]

    def add(self, title: str, why: str, due: str | None, milestones: list[str]) -> int:
        """A new active goal (`due`: YYYY-MM-DD) with its milestones in order; returns its id."""
        stamp = now()
        with self._store.transaction():
            row = {"title": title, "why": why, "due": due, "created_at": stamp, "updated_at": stamp}
            goal_id = self._store._insert("goals", row)
            for position, step in enumerate(milestones, 1):
                self._store._insert("milestones", {"goal_id": goal_id, "position": position, "title": step})
        return goal_id

    def add_milestone(self, goal_id: int, title: str) -> int:
        """A milestone after the goal's last one; returns its position."""
        with self._store.transaction():
            last = self._store._select("SELECT max(position) AS n FROM milestones WHERE goal_id = ?", (goal_id,))
            position = (last[0]["n"] or 0) + 1
            self._store._insert("milestones", {"goal_id": goal_id, "position": position, "title": title})
            self._store._update("goals", {"updated_at": now()}, id=goal_id)
        return position

    def set_milestone_done(self, goal_id: int, position: int, done: bool = True) -> None:
        stamp = now()
        with self._store.transaction():
            self._store._update("milestones", {"done_at": stamp if done else None}, goal_id=goal_id, position=position)
            self._store._update("goals", {"updated_at": stamp}, id=goal_id)

    def update(self, goal_id: int, *, progress: int | None = None, status: str | None = None) -> None:
        """Set the progress (0-100) and/or the status (active | done | dropped)."""
        changes = {k: v for k, v in (("progress", progress), ("status", status)) if v is not None}
        with self._store.transaction():
            self._store._update("goals", {**changes, "updated_at": now()}, id=goal_id)
