"""The scheduler's jobs (`jobs`): each job's name, its next run, its last run and the
error that run ended with, if any. Times are ISO 8601 text; what runs when is
`anima.proactive.scheduler`'s."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anima.store.store import Store


class Jobs:
    def __init__(self, store: Store):
        self._store = store

    def next_runs(self) -> dict[str, str]:
        """Job name -> its next run."""
        return {r["name"]: r["next_run"] for r in self._store._select("SELECT name, next_run FROM jobs")}

    def save(self, name: str, next_run: str, last_run: str | None = None, error: str | None = None) -> None:
        """Record a job's next run and last error; its last run too, when given (else the one
        recorded stays)."""
        row = {"name": name, "next_run": next_run, "last_run": last_run, "last_error": error}
        replace = ["next_run", "last_error"] + (["last_run"] if last_run is not None else [])
        self._store._insert("jobs", row, conflict="name", replace=replace)

    def create(self, name: str, next_run: str) -> None:
        """A new job's first run, unless the job is there already (another process made it)."""
        self._store._insert("jobs", {"name": name, "next_run": next_run}, conflict="name")

    def claim(self, name: str, due: str, next_run: str, last_run: str) -> bool:
        """Take the run due at `due`: move the job on to `next_run`, if it is still due then.
        False when another process (or thread) took it first: with both sharing a store,
        each run is taken by one of them (a conditional UPDATE of one row, which the
        database serialises)."""
        return bool(
            self._store._write(
                "UPDATE jobs SET next_run = ?, last_run = ?, last_error = NULL WHERE name = ? AND next_run = ?",
                (next_run, last_run, name, due),
            )
        )

    def all(self) -> list[dict]:
        """name, next_run, last_run, last_error of every job, by name."""
        return self._store._select("SELECT * FROM jobs ORDER BY name")
