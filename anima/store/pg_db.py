"""Connecting to PostgreSQL for one user: the user's role and schema, made when missing.

Each user is a schema of their own, `anima_<user>`, owned by a role of the same name
that has no login and no rights anywhere else. A store connects as the login role of
`store.url`, makes the user's role and schema if they are missing, then `SET ROLE`s to
it: every query the store runs can see that user's tables only, so a missing WHERE or a
wrong schema name cannot read another user's rows (PostgreSQL answers "permission
denied"). The login role is a member of each user role with SET but without INHERIT,
so it cannot read users' tables either without switching to one of them.

What this does not stop: code that runs arbitrary SQL on the login connection can
`SET ROLE` to any user; the login role (with CREATEROLE) is trusted as the server
process is. Needs PostgreSQL 16 or later (`GRANT ... WITH INHERIT FALSE, SET TRUE`).
"""

from __future__ import annotations

import numpy as np

from anima.errors import StoreError

try:
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row
except ImportError as exc:  # the optional extra is not installed
    raise StoreError("PostgreSQL support is not installed", "pip install 'anima[postgres]'") from exc

from anima.store.pg_migrations import migrate


def schema_name(user: str) -> str:
    name = f"anima_{user}"
    if len(name.encode()) > 63:  # PostgreSQL's longest name
        raise StoreError(f"the user name {user!r} is too long for PostgreSQL", "use a name of at most 57 characters")
    return name


def where(url: str) -> str:
    """The server and database of a URL, without the password, to name in messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unreadable URL)"
    return f"{info.get('host') or 'localhost'}/{info.get('dbname') or ''}"


def connect(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, autocommit=True, row_factory=dict_row)
    except psycopg.Error as exc:
        raise StoreError(
            f"cannot connect to PostgreSQL at {where(url)}: {exc}".strip(),
            "check store.url and that the server is running",
        ) from exc


def _provision(db: psycopg.Connection, schema: str) -> None:
    """The pgvector extension, the user's role and schema: made when missing, once even
    when two processes open a new user at the same time."""
    ident = sql.Identifier(schema)
    try:
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(hashtext('anima provision'))")
            if not db.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
                _create_vector_extension(db)
            if not db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (schema,)).fetchone():
                db.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident))
                # Membership to SET ROLE to it, without inheriting its rights (PostgreSQL 16+).
                db.execute(sql.SQL("GRANT {} TO CURRENT_USER WITH INHERIT FALSE, SET TRUE").format(ident))
            db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(ident, ident))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise StoreError(
            f"the PostgreSQL role cannot set up the user's schema {schema}: {exc}",
            "give the role of store.url CREATEROLE and CREATE on the database, or make the role and schema beforehand",
        ) from exc
    except (psycopg.errors.FeatureNotSupported, psycopg.errors.UndefinedFile) as exc:
        raise StoreError(
            f"pgvector is not available on the server: {exc}", "install pgvector on the PostgreSQL server"
        ) from exc


def _create_vector_extension(db: psycopg.Connection) -> None:
    try:
        db.execute("CREATE EXTENSION vector")
    except psycopg.errors.InsufficientPrivilege as exc:
        raise StoreError(
            "pgvector is not enabled in this database, and the role of store.url may not enable it",
            "connect as a superuser once and run: CREATE EXTENSION vector;",
        ) from exc


def open_schema(url: str, schema: str) -> psycopg.Connection:
    """A connection acting as the user's role, their schema first on the search path, its
    migrations applied (once, when two processes open it at the same time)."""
    db = connect(url)
    try:
        _provision(db, schema)
        ext = db.execute(  # the schema pgvector's types are in, for the search path
            "SELECT nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE extname = 'vector'"
        ).fetchone()["nspname"]
        db.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(schema)))
        db.execute(sql.SQL("SET search_path TO {}, {}").format(sql.Identifier(schema), sql.Identifier(ext)))
        db.execute("SELECT pg_advisory_lock(hashtext(%s))", (schema,))
        try:
            migrate(db)
        finally:
            db.execute("SELECT pg_advisory_unlock(hashtext(%s))", (schema,))
    except BaseException:
        db.close()
        raise
    return db


def drop_user(url: str, user: str) -> None:
    """Delete everything a user has in the database: their schema and their role."""
    schema = sql.Identifier(schema_name(user))
    with connect(url) as db, db.transaction():
        if not db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (schema_name(user),)).fetchone():
            return
        db.execute(sql.SQL("SET LOCAL ROLE {}").format(schema))  # its owner drops the schema
        db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
        db.execute("RESET ROLE")
        db.execute(sql.SQL("DROP ROLE {}").format(schema))


def placeholders(query: str) -> str:
    """SQL written for both backends, with psycopg's placeholders instead of SQLite's `?`
    (our own statements: none has a `?` or a `%` of its own)."""
    assert "%" not in query, query
    return query.replace("?", "%s")


def to_vector(vector) -> str | None:
    """pgvector's text form of the L2-normalised vector; None for a zero vector (no
    direction to compare), which is left out of vector search, as in SQLite."""
    v = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(v))
    if not (norm > 0 and np.isfinite(norm)):
        return None
    return "[" + ",".join(str(float(x)) for x in (v / norm).astype(np.float32)) + "]"
