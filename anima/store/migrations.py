"""Numbered schema changes. Each runs once, in one transaction, recorded by name in
`_anima_migrations`. Shipped migrations are never edited; add a new one instead."""

from __future__ import annotations

import sqlite3
from typing import Callable

MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = []
migration = MIGRATIONS.append


@migration
def m001_conversations(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL DEFAULT '',
            persona TEXT NOT NULL,
            created_at TEXT NOT NULL
        )"""
    )


@migration
def m002_turns(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE turns (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            created_at TEXT NOT NULL,
            persona TEXT NOT NULL,
            model TEXT NOT NULL,
            user_text TEXT NOT NULL,
            reply TEXT NOT NULL,
            status TEXT NOT NULL,            -- ok | stopped | error
            finish_reason TEXT,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            latency_ms REAL NOT NULL,
            first_token_ms REAL
        )"""
    )
    db.execute("CREATE INDEX turns_conversation ON turns(conversation_id, id)")


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply what has not run yet; returns the names applied."""
    db.execute("CREATE TABLE IF NOT EXISTS _anima_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT (datetime('now')))")
    done = {row[0] for row in db.execute("SELECT name FROM _anima_migrations")}
    applied = []
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        with db:  # one transaction: the change and its record land together or not at all
            fn(db)
            db.execute("INSERT INTO _anima_migrations (name) VALUES (?)", (fn.__name__,))
        applied.append(fn.__name__)
    return applied
