"""Numbered schema changes. Each runs once, in one transaction, recorded by name in
`_anima_migrations`. Shipped migrations are never edited; add a new one instead."""

from __future__ import annotations

from typing import Callable

from anima.store.db import Connection, transaction
from anima.store.sql import insert

MIGRATIONS: list[Callable[[Connection], None]] = []
migration = MIGRATIONS.append


@migration
def m001_conversations(db: Connection) -> None:
    db.execute(
        """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL DEFAULT '',
            persona TEXT NOT NULL,
            created_at TEXT NOT NULL
        )"""
    )


@migration
def m002_turns(db: Connection) -> None:
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


@migration
def m003_episodes(db: Connection) -> None:
    # Episodic layer: every message, as said, with the time it was said.
    db.execute(
        """CREATE TABLE episodes (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER REFERENCES conversations(id) ON DELETE SET NULL,
            role TEXT NOT NULL,              -- user | assistant | other
            speaker TEXT NOT NULL DEFAULT '',
            text TEXT NOT NULL,
            ts TEXT NOT NULL,                -- when it was said (ISO 8601)
            source TEXT NOT NULL DEFAULT 'chat',
            ref TEXT,                        -- an id in the source (e.g. a LoCoMo dia_id)
            embedding BLOB
        )"""
    )
    db.execute("CREATE INDEX episodes_ts ON episodes(ts)")
    db.execute("CREATE VIRTUAL TABLE fts_episodes USING fts5(text, tokenize='porter unicode61')")


@migration
def m004_memories(db: Connection) -> None:
    # Semantic layer: distilled facts, preferences, plans... with validity and provenance.
    db.execute(
        """CREATE TABLE memories (
            id INTEGER PRIMARY KEY,
            text TEXT NOT NULL,
            kind TEXT NOT NULL,              -- fact | preference | event | plan | person | relation
            subject TEXT NOT NULL DEFAULT 'user',
            ref_date TEXT,                   -- the day it refers to, resolved from "next Friday"
            valid_from TEXT NOT NULL,
            valid_to TEXT,                   -- set when superseded; the row stays
            confidence REAL NOT NULL DEFAULT 1.0,
            source_ids TEXT NOT NULL DEFAULT '[]',   -- JSON list of episode ids
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            embedding BLOB
        )"""
    )
    db.execute("CREATE INDEX memories_valid ON memories(valid_to, kind)")
    db.execute("CREATE VIRTUAL TABLE fts_memories USING fts5(text, tokenize='porter unicode61')")
    db.execute("CREATE TABLE _anima_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


@migration
def m005_egress(db: Connection) -> None:
    # What left this machine, where to, and what was redacted first (counts, not values).
    db.execute(
        """CREATE TABLE egress (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            destination TEXT NOT NULL,
            chars INTEGER NOT NULL,
            redacted TEXT NOT NULL DEFAULT '{}'   -- JSON: kind -> count
        )"""
    )


@migration
def m008_goals_notes(db: Connection) -> None:
    db.execute(
        """CREATE TABLE goals (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            why TEXT NOT NULL DEFAULT '',
            due TEXT,                        -- YYYY-MM-DD
            status TEXT NOT NULL DEFAULT 'active',   -- active | done | dropped
            progress INTEGER NOT NULL DEFAULT 0,     -- 0-100, set by hand; milestones override it
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE milestones (
            id INTEGER PRIMARY KEY,
            goal_id INTEGER NOT NULL REFERENCES goals(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,       -- 1, 2, ... in the goal's order
            title TEXT NOT NULL,
            done_at TEXT                     -- NULL while open
        )"""
    )
    db.execute("CREATE INDEX milestones_goal ON milestones(goal_id, position)")
    db.execute(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, title TEXT NOT NULL DEFAULT '', text TEXT NOT NULL, "
        "created_at TEXT NOT NULL)"
    )
    db.execute("CREATE VIRTUAL TABLE fts_notes USING fts5(text, tokenize='porter unicode61')")


@migration
def m009_calendar(db: Connection) -> None:
    db.execute(
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            uid TEXT NOT NULL UNIQUE,
            title TEXT NOT NULL,
            start TEXT NOT NULL,             -- wall time in `tz` (YYYY-MM-DDTHH:MM:SS), or YYYY-MM-DD for a whole day
            end TEXT NOT NULL,               -- exclusive, same form as start
            tz TEXT,                         -- IANA name; NULL for floating (local) times and whole days
            location TEXT NOT NULL DEFAULT '',
            description TEXT NOT NULL DEFAULT '',
            rrule TEXT,                      -- RFC 5545 RRULE value, for repeating events
            exdates TEXT NOT NULL DEFAULT '[]'   -- JSON list of skipped occurrence starts, same form as start
        )"""
    )


@migration
def m010_documents(db: Connection) -> None:
    # Files under the user's document folders; their text, in passages, in FTS5.
    db.execute(
        "CREATE TABLE doc_files (path TEXT PRIMARY KEY, root TEXT NOT NULL, mtime REAL NOT NULL, size INTEGER NOT NULL)"
    )
    db.execute(
        "CREATE VIRTUAL TABLE doc_passages USING fts5(path UNINDEXED, cite UNINDEXED, chunk UNINDEXED, "
        "line_start UNINDEXED, line_end UNINDEXED, text, tokenize='porter unicode61')"
    )


@migration
def m006_reminders(db: Connection) -> None:
    # Reminders (a time, maybe repeating) and to-dos (a due time optional), one table.
    db.execute(
        """CREATE TABLE reminders (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,              -- reminder | todo
            text TEXT NOT NULL,
            due TEXT,                        -- next time it is due, ISO 8601 with offset; NULL: a to-do without one
            every TEXT,                      -- repeat rule as written ("every Monday at 9"); NULL: once
            status TEXT NOT NULL DEFAULT 'open',   -- open | done | cancelled
            fired TEXT,                      -- the `due` that last went to the inbox: each due fires once
            created_at TEXT NOT NULL,
            done_at TEXT
        )"""
    )


@migration
def m007_jobs_inbox(db: Connection) -> None:
    # The scheduler's jobs (when each runs next) and the inbox of what it raised.
    db.execute("CREATE TABLE jobs (name TEXT PRIMARY KEY, next_run TEXT NOT NULL, last_run TEXT, last_error TEXT)")
    db.execute(
        """CREATE TABLE inbox (
            id INTEGER PRIMARY KEY,
            key TEXT UNIQUE,                 -- what it is about, raised once: "reminder:3@2024-05-13T09:00:00+02:00"
            kind TEXT NOT NULL,              -- reminder | todo | date | goal | briefing
            title TEXT NOT NULL,
            body TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL DEFAULT '', -- why it was raised, shown with it
            data TEXT NOT NULL DEFAULT '{}', -- JSON: ids it refers to, briefing sections
            relevance REAL NOT NULL DEFAULT 1.0,
            created TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'new',      -- new | done | snoozed | dismissed
            snooze_until TEXT,
            acted_at TEXT,                   -- when the user last marked it
            notify TEXT NOT NULL DEFAULT 'pending',  -- pending | sent | skipped
            notified_at TEXT
        )"""
    )
    db.execute("CREATE INDEX inbox_status ON inbox(status, id)")


@migration
def m011_learn_queue(db: Connection) -> None:
    # Messages waiting to be learned from; `taken_at` (unix seconds) while a process holds one.
    db.execute(
        "CREATE TABLE learn_queue (episode_id INTEGER PRIMARY KEY, text TEXT NOT NULL, ts TEXT NOT NULL, "
        "speaker TEXT NOT NULL, queued_at REAL NOT NULL, taken_at REAL)"
    )


def migrate(db: Connection) -> list[str]:
    """Apply what has not run yet; returns the names applied."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS _anima_migrations "
        "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT (datetime('now')))"
    )
    done = {row[0] for row in db.execute("SELECT name FROM _anima_migrations")}
    applied = []
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        with transaction(db):  # one transaction: the change and its record land together or not at all
            fn(db)
            insert(db, "_anima_migrations", {"name": fn.__name__})
        applied.append(fn.__name__)
    return applied
