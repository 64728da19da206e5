"""The learner's queue (`learn_queue`): the messages waiting to be learned from, kept in
the store so that none is lost when anima stops or is killed, and so that several
processes on one store share the work. A message is taken for a while (a lease, by
`taken_at`): one whose process died is taken again when its lease runs out."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anima.store.store import Store


class LearnQueue:
    def __init__(self, store: Store):
        self._store = store

    def add(self, episode_id: int, text: str, when: str, speaker: str) -> None:
        """Queue a message (an episode) once; queued again, it stays as it was."""
        row = {"episode_id": episode_id, "text": text, "ts": when, "speaker": speaker, "queued_at": time.time()}
        self._store._insert("learn_queue", row, conflict="episode_id")

    def take(self, lease: float) -> dict | None:
        """The oldest message nobody holds (or whose holder's lease of `lease` seconds ran
        out), now held by the caller: episode_id, text, ts, speaker. None when there is none.
        Of two processes asking at once, each gets a different one (a conditional UPDATE)."""
        now = time.time()
        for row in self._store._select(
            "SELECT * FROM learn_queue WHERE taken_at IS NULL OR taken_at < ? ORDER BY episode_id LIMIT 4",
            (now - lease,),
        ):
            taken = self._store._write(
                "UPDATE learn_queue SET taken_at = ? WHERE episode_id = ? AND (taken_at IS NULL OR taken_at < ?)",
                (now, row["episode_id"], now - lease),
            )
            if taken:
                return row
        return None

    def release(self, episode_id: int) -> None:
        """Give a held message back (to be learned from later)."""
        self._store._write("UPDATE learn_queue SET taken_at = NULL WHERE episode_id = ?", (episode_id,))

    def done(self, episode_id: int) -> None:
        self._store._write("DELETE FROM learn_queue WHERE episode_id = ?", (episode_id,))

    def count(self) -> int:
        """Messages waiting or being learned from."""
        return self._store._select("SELECT count(*) AS n FROM learn_queue")[0]["n"]
