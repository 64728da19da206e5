"""Numbered schema changes. Each runs once, in one transaction, recorded by name in
`_anima_migrations`. Shipped migrations are never edited; add a new one instead."""

from __future__ import annotations

from typing import Callable

from anima.store.db import Connection, transaction

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


def migrate(db: Connection) -> list[str]:
    """Apply what has not run yet; returns the names applied."""
    db.execute("CREATE TABLE IF NOT EXISTS _anima_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT (datetime('now')))")
    done = {row[0] for row in db.execute("SELECT name FROM _anima_migrations")}
    applied = []
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        with transaction(db):  # one transaction: the change and its record land together or not at all
            fn(db)
            db.execute("INSERT INTO _anima_migrations (name) VALUES (?)", (fn.__name__,))
        applied.append(fn.__name__)
    return applied
