"""What the store's tables share: the one INSERT and UPDATE builder, the time stamp, and
the words of a full-text search. A row is a dict of column -> value; the statement is
made from its keys, with named parameters.

    insert(db, "notes", {"title": "", "text": "milk", "created_at": t})  -> the new id
    insert(db, "events", row, conflict="uid", replace=["title", "start"])  -> an upsert
    update(db, "reminders", {"status": "done"}, id=3)                     -> rows changed

Column and table names come from our own code, never from the user; they are checked
to be plain names all the same.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Iterable

from anima.store.db import Connection


def now() -> str:
    """The time rows are stamped with: UTC, ISO 8601, to the millisecond."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _names(*names: str) -> None:
    assert all(n.isidentifier() for n in names), f"not a plain column or table name: {names}"


def insert(
    db: Connection, table: str, row: dict, conflict: str | None = None, replace: Iterable[str] = ()
) -> int | None:
    """Insert one row; returns its id. With `conflict` (a unique column), a row holding the
    same value already stays: the columns in `replace` take the new values (the id returned
    then means nothing), or, when none are named, nothing changes and None is returned."""
    cols, replace = list(row), list(replace)
    _names(table, *cols, *replace, *([conflict] if conflict else []))
    sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"
    if conflict and replace:
        sql += f" ON CONFLICT({conflict}) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in replace)}"
    elif conflict:
        sql += f" ON CONFLICT({conflict}) DO NOTHING"
    cur = db.execute(sql, row)
    return cur.lastrowid if cur.rowcount else None


def update(db: Connection, table: str, changes: dict, **where) -> int:
    """Set `changes` in the rows whose columns equal `where`; returns how many rows changed."""
    assert changes and where, "an UPDATE needs changes and a WHERE"
    _names(table, *changes, *where)
    sets = ", ".join(f"{c} = :{c}" for c in changes)
    match = " AND ".join(f"{c} = :where_{c}" for c in where)
    params = {**changes, **{f"where_{c}": v for c, v in where.items()}}
    return db.execute(f"UPDATE {table} SET {sets} WHERE {match}", params).rowcount


# Words too common to say what a question is about; BM25's IDF alone leaves them noisy.
STOPWORDS = frozenset(
    "a about above after again all am an and any are as at be because been before being below between both but by "
    "can could did do does doing down during each few for from further had has have having he her here hers herself "
    "him himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only "
    "or other our ours ourselves out over own same she should so some such than that the their theirs them themselves "
    "then there these they this those through to too under until up very was we were what when where which while who "
    "whom why will with would you your yours yourself yourselves s t don ll m re ve d".split()
)


def query_words(text: str) -> list[str]:
    """The words a text search looks for: each once, lowercased, without stopwords
    unless nothing else is left. None at all: there is nothing to search for."""
    words = list(dict.fromkeys(re.findall(r"\w+", text.lower())))
    return [w for w in words if w not in STOPWORDS] or words


def fts_query(text: str) -> str:
    """A user's words as an FTS5 query: each word quoted (no operators), OR-ed."""
    return " OR ".join(f'"{w}"' for w in query_words(text))
