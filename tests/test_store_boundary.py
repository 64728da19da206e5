"""Nothing outside `anima/store/` writes SQL or reaches into a store's connection or lock:
a second backend then has one interface to implement. This reads the source of every
other module and names each file and line that does."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import anima

PACKAGE = Path(anima.__file__).parent
SQL = re.compile(
    r"\bSELECT\b[\s\S]+?\bFROM\b|\bINSERT\s+(?:OR\s+\w+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
    r"|\b(?:CREATE|DROP|ALTER)\s+(?:VIRTUAL\s+|UNIQUE\s+|TEMP\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)\b"
    r"|\bPRAGMA\s+\w+|\bBEGIN\s+(?:IMMEDIATE|TRANSACTION)\b"
)
INTERNALS = {"db", "conn", "execute", "executemany", "executescript"}  # besides any _private name


def _text(node: ast.AST) -> str | None:
    """A string literal's text; an f-string's with each {...} as 'x'."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "x" for v in node.values)
    return None


def _owner(node: ast.AST) -> str:
    """The name an attribute hangs off: `store` for `ctx.store._lock`, `self` for `self._lock`."""
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def leaks(source: str, filename: str) -> list[str]:
    """'file:line: why' for each SQL string and each use of a store's internals."""
    found = set()
    for node in ast.walk(ast.parse(source, filename)):
        text = _text(node)
        if text is not None and (m := SQL.search(text)):
            found.add((node.lineno, f"SQL in a string ({m.group(0)[:40]!r})"))
        if not isinstance(node, ast.Attribute):
            continue
        owner = _owner(node.value)
        if owner.lower().endswith("store") and (node.attr.startswith("_") or node.attr in INTERNALS):
            found.add((node.lineno, f"uses the store's internals ({owner}.{node.attr})"))
        elif node.attr == "_lock" and owner != "self":
            found.add((node.lineno, f"takes another object's private lock ({owner}._lock)"))
    return [f"{filename}:{line}: {why}" for line, why in sorted(found)]


def test_no_sql_or_store_internals_outside_the_store():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "store") in path.parents:
            continue
        problems += leaks(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))
    assert not problems, "use the store's methods (anima/store/) instead:\n" + "\n".join(problems)


def test_the_check_finds_sql_and_private_locks():
    source = """
def add_note(store, text):
    with store._lock, transaction(store.db):
        store.db.execute("INSERT INTO notes (text) VALUES (?)", (text,))
    rows = ctx.store.db.execute(f"SELECT * FROM {table} WHERE id = ?")
    other._lock.acquire()
    db.execute(f"UPDATE {table} SET x = 1")
    db.execute("CREATE VIRTUAL TABLE fts USING fts5(text)")
"""
    found = leaks(source, "anima/tools/bad.py")
    assert found == [
        "anima/tools/bad.py:3: uses the store's internals (store._lock)",
        "anima/tools/bad.py:3: uses the store's internals (store.db)",
        "anima/tools/bad.py:4: SQL in a string ('INSERT INTO')",
        "anima/tools/bad.py:4: uses the store's internals (store.db)",
        "anima/tools/bad.py:5: SQL in a string ('SELECT * FROM')",
        "anima/tools/bad.py:5: uses the store's internals (store.db)",
        "anima/tools/bad.py:6: takes another object's private lock (other._lock)",
        "anima/tools/bad.py:7: SQL in a string ('UPDATE x SET')",
        "anima/tools/bad.py:8: SQL in a string ('CREATE VIRTUAL TABLE')",
    ]


def test_prose_and_the_stores_own_methods_pass():
    source = '''
"""Select the best from the list; update the goal. Insert into the inbox, delete from the list."""
def f(store, self):
    store.notes.add("title", "text")
    with store.transaction():
        store.goals.update(1, status="done")
    with self._lock:
        print("SELECT a tool, then UPDATE its settings")
'''
    assert leaks(source, "anima/x.py") == []
