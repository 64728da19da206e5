"""Notes: short texts the user keeps, searchable by their words (FTS5, BM25)."""

from __future__ import annotations

from anima.errors import BadInput, NotFound
from anima.store import query_words
from anima.tools import Tool, ToolContext, tool


def _row(r: dict) -> dict:
    return {"id": r["id"], "title": r["title"], "text": r["text"], "created_at": r["created_at"]}


def add_note(store, text: str, title: str = "") -> dict:
    text, title = text.strip(), title.strip()
    if not text:
        raise BadInput("a note needs some text", "say what to write down")
    note_id = store.notes.add(title, text)
    return {"id": note_id, "title": title, "text": text}


def list_notes(store, limit: int = 20) -> list[dict]:
    """The latest notes, newest first."""
    return [_row(r) for r in store.notes.latest(limit)]


def search_notes(store, query: str, k: int = 5) -> list[dict]:
    """Notes sharing words with the query, best first, each with a `score` (higher is better)."""
    if not query_words(query):
        raise BadInput("nothing to search for", "give a word or two")
    return [{**_row(r), "score": round(r["score"], 4)} for r in store.notes.search(query, k)]


def delete_note(store, note_id: int) -> None:
    if not store.notes.delete(note_id):
        raise NotFound(f"no note with id {note_id}", "see them with `anima notes list`")


def _line(note: dict) -> str:
    return f"#{note['id']} " + (f"{note['title']}: " if note["title"] else "") + note["text"]


def tools(ctx: ToolContext) -> list[Tool]:
    store = ctx.store

    def note_add(text: str, title: str = "") -> str:
        """Save a note for the user (text to keep and find later)."""
        return "saved note " + _line(add_note(store, text, title))

    def note_search(query: str = "") -> str:
        """Find the user's notes by words (no query: the latest notes)."""
        if not query.strip():
            return "\n".join(_line(n) for n in list_notes(store, 10)) or "no notes yet"
        return "\n".join(_line(n) for n in search_notes(store, query)) or f"no notes about '{query}'"

    def note_delete(note_id: int) -> str:
        """Delete one of the user's notes by id."""
        delete_note(store, note_id)
        return f"deleted note #{note_id}"

    about_notes = r"\bnotes?\b"
    return [
        tool(
            note_add,
            side_effects=True,
            triggers=about_notes + r"|\bjot\b|\bwrite (?:it|this|that) down\b",
            own_words=True,
        ),
        tool(note_search, triggers=about_notes, own_words=True),
        tool(note_delete, side_effects=True, triggers=about_notes, own_words=True),
    ]
