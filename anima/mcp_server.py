"""`anima mcp serve`: the user's memory, reminders and notes as an MCP server.

Other assistants (Claude Desktop, an IDE, another agent) can then search and add to what
anima remembers. Nothing here loads a chat model; memory search uses the configured
embedder (with `backend = "fake"` the deterministic FakeEmbedder, which needs no files).
Errors the caller can fix (an unknown kind, a time that cannot be read) come back as
tool errors with anima's one-line message.

Over stdio the client process owns the pipe. Over HTTP (`http_app`) every request needs
`Authorization: Bearer <key>` with an active API key of the served user, the same keys
as `anima serve` (`anima users add NAME`); anything else gets a 401.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from anima.errors import AnimaError, BadInput

UNAUTHORIZED = {
    "error": {
        "message": "missing or invalid API key; send `Authorization: Bearer <key>` (`anima users add NAME` makes one)",
        "type": "authentication_error",
        "code": "invalid_api_key",
        "param": None,
    }
}


@contextlib.contextmanager
def _as_tool_errors() -> Iterator[None]:
    """anima's errors become MCP tool errors, whose text the caller sees (others are hidden)."""
    from mcp.server.mcpserver.exceptions import ToolError

    try:
        yield
    except AnimaError as exc:
        raise ToolError(str(exc)) from exc


def create_server(container):
    """An MCPServer over `container`'s store and embedder (`anima.app.build(config)`)."""
    from mcp.server.mcpserver import MCPServer
    from mcp.types import ToolAnnotations

    from anima.memory import MemoryService
    from anima.store import KINDS
    from anima.tools import notes, reminders

    user = container.config.user
    server = MCPServer(
        "anima", instructions=f"The personal memory, reminders and notes of anima user '{user}'.", log_level="WARNING"
    )
    store = container.store
    memory = MemoryService(store, container.embedder)  # no model: nothing here learns
    reading = ToolAnnotations(read_only_hint=True)
    adding = ToolAnnotations(read_only_hint=False, destructive_hint=False)

    @server.tool(annotations=reading)
    def memory_search(query: str, k: int = 8) -> str:
        """Search what anima remembers about the user (memories and past messages) by words, meaning and time."""
        with _as_tool_errors():
            if not 1 <= k <= 50:
                raise AnimaError(f"k must be between 1 and 50, not {k}")
            if not query.strip():
                raise AnimaError("nothing to search for", "give a word or two")
            hits = memory.recall(query, k=k)
        return (
            "\n".join(f"[{h.kind} #{h.id}]" + (f" {h.when[:10]}" if h.when else "") + f" {h.text}" for h in hits)
            or "nothing found"
        )

    @server.tool(annotations=adding, description=f"Remember something about the user. kind: one of {', '.join(KINDS)}.")
    def memory_add(text: str, kind: str = "fact") -> str:
        with _as_tool_errors():
            m = memory.add(text, kind=kind)
        return f"remembered #{m.id}: {m.text}"

    @server.tool(annotations=reading)
    def memory_list(kind: str = "") -> str:
        (
            """List what anima remembers, oldest first; """
            """optionally only one kind (fact, preference, event, plan, person, relation)."""
        )
        with _as_tool_errors():
            if kind and kind not in KINDS:
                raise AnimaError(f"unknown kind '{kind}'", f"use one of: {', '.join(KINDS)}")
        rows = store.list_memories(kind=kind or None)
        return "\n".join(f"#{m.id} [{m.kind}] {m.text}" for m in rows) or "no memories"

    @server.tool(annotations=reading)
    def reminders_list(include_closed: bool = False) -> str:
        """List the user's reminders, soonest first."""
        return "\n".join(r.describe() for r in reminders.list_reminders(store, include_closed)) or "no reminders"

    @server.tool(annotations=adding)
    def reminder_add(text: str, when: str) -> str:
        """Set a reminder: `when` in English, e.g. 'tomorrow at 9', 'in 2 hours', 'every Monday at 9'."""
        with _as_tool_errors():
            r = reminders.add_reminder(store, text, when)
        return f"reminder #{r.id} set: " + r.describe()

    @server.tool(annotations=reading)
    def notes_search(query: str, k: int = 5) -> str:
        """Search the user's notes by their words."""
        with _as_tool_errors():
            found = notes.search_notes(store, query, k)
        return (
            "\n".join(f"#{n['id']} " + (f"{n['title']}: " if n["title"] else "") + n["text"] for n in found)
            or "no notes found"
        )

    return server


def http_app(container, accounts):
    """An ASGI app serving `create_server(container)` over streamable HTTP at /mcp, only
    to requests with an active API key (`accounts`, an `Accounts`) of `container`'s user.
    Raises BadInput, before loading anything, when that user has no active key."""
    from starlette.datastructures import Headers
    from starlette.responses import JSONResponse

    user = container.config.user
    if not any(a.name == user and not a.revoked for a in accounts.list()):
        raise BadInput(
            f"no API key for user '{user}', and MCP over HTTP needs one",
            f"run `anima users add {user}`, then send it as `Authorization: Bearer <key>`",
        )
    mcp_app = create_server(container).streamable_http_app(host="127.0.0.1")  # the SDK's DNS-rebinding check stays on

    def key_owner(scope) -> str | None:
        scheme, _, key = Headers(scope=scope).get("authorization", "").partition(" ")
        key = key.strip()
        return (
            accounts.user_for(key) if scheme.lower() == "bearer" and key else None
        )  # looked up by hash; revoked keys have no owner

    async def app(scope, receive, send):
        if scope["type"] == "http" and key_owner(scope) != user:  # a key of another user is no better than none
            await JSONResponse(UNAUTHORIZED, status_code=401, headers={"WWW-Authenticate": "Bearer"})(
                scope, receive, send
            )
            return
        await mcp_app(scope, receive, send)  # "lifespan" too: it starts the SDK's session manager

    return app
