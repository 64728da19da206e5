"""Tools from MCP servers the user configures (`[mcp.NAME]` in config.toml).

Each server is started (stdio: `command`, `args`, `env`) or reached (`url`: streamable
HTTP, with `headers`), its tools are listed, and each becomes an anima `Tool` named
`NAME__tool`. The MCP SDK is async and anima's core is not, so one `McpClients` owns one
event loop on a background thread; every session lives in a task there for as long as
anima runs, and a tool's `fn` hands its call to that loop and waits.

A header value may name environment variables (`Bearer ${ANIMA_MCP_KEY}`), so a key need
not sit in the config file; no message or log line ever shows a header's value.

A server that cannot start (no such command, it crashes, the URL is down) is a one-line
warning and its tools are absent; a call that fails or overruns is a `ToolError`, which
the Toolbox turns into an "error: ..." result. A server's stderr goes to
`$ANIMA_HOME/logs/mcp-NAME.log`, the SDK's own log to `logs/mcp.log`, never the terminal.
Note that a stdio server gets only a minimal environment (HOME, PATH, ...) plus `env`.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import json
import logging
import os
import re
import threading
from contextlib import AsyncExitStack
from typing import Any

from anima.config import McpServerSettings, data_dir
from anima.errors import AnimaError, ConfigError
from anima.tools import Tool, ToolError

log = logging.getLogger("anima")

START_S = 20.0  # how long a server may take to start and list its tools
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # `${VAR}` in a header value


class Refused(Exception):
    """An HTTP server answered 401 or 403: the `headers` carry no key it accepts."""

    def __init__(self, status: int, phrase: str):
        super().__init__(f"HTTP {status} {phrase}".strip())


def tool_name(server: str, tool: str) -> str:
    """`server__tool`, in the characters (and length) the OpenAI tool format allows."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{server}__{tool}")[:64]


def reason(exc: BaseException) -> str:
    """One line for why a connection failed (the SDK wraps errors in exception groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, AnimaError):
        return str(exc)
    if isinstance(exc, Refused):
        return f"{exc}: the server did not accept the request's key (check `headers` in its [mcp.NAME] table)"
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {exc.filename}"
    if isinstance(exc, (TimeoutError, concurrent.futures.TimeoutError)):
        return f"no answer within {START_S:g} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def expand_headers(server: str, headers: dict[str, str]) -> dict[str, str]:
    """`headers` with each `${VAR}` replaced by that environment variable. Errors name the
    header and the variable, never a value (it may be a key)."""

    def expand(header: str, value: str) -> str:
        def lookup(ref: re.Match) -> str:
            if not (found := os.environ.get(ref[1])):
                raise ConfigError(
                    f"environment variable {ref[1]}, used in header '{header}' of [mcp.{server}], is not set",
                    "export it before starting anima",
                )
            return found

        value = ENV_REF.sub(lookup, value)
        if not value.isascii() or any(c in value for c in "\r\n\0"):  # httpx would quote the value in its error
            raise ConfigError(
                f"header '{header}' of [mcp.{server}] has characters an HTTP header cannot carry",
                "use one line of ASCII",
            )
        return value

    return {header: expand(header, value) for header, value in headers.items()}


async def _refuse(response: Any) -> None:
    """httpx response hook: a 401/403 becomes `Refused`, not the SDK's generic "error response"."""
    if response.status_code in (401, 403):
        raise Refused(response.status_code, response.reason_phrase)


def result_text(result: Any) -> str:
    """The text of a CallToolResult: its text blocks, or its structured content."""
    parts = [block.text if block.type == "text" else f"[{block.type}]" for block in result.content]
    if not any(block.type == "text" for block in result.content) and result.structured_content is not None:
        parts = [json.dumps(result.structured_content, ensure_ascii=False)]
    return "\n".join(parts)


def _log_file(name: str):
    try:
        folder = data_dir() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        return open(folder / f"mcp-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.log", "a", encoding="utf-8")
    except OSError:
        return open(os.devnull, "w")


def _sdk_log_to_file() -> None:
    """The SDK logs parse errors with tracebacks; they belong in a file, not the chat."""
    sdk = logging.getLogger("mcp")
    if sdk.propagate:
        sdk.propagate = False
        try:
            (data_dir() / "logs").mkdir(parents=True, exist_ok=True)
            sdk.addHandler(logging.FileHandler(data_dir() / "logs" / "mcp.log", encoding="utf-8"))
        except OSError:
            sdk.addHandler(logging.NullHandler())


class McpClients:
    """Sessions with the configured MCP servers, on one background event loop.

    After construction, `by_server` holds the tools of each server that started and
    `errors` says, per server that did not, why. `close()` ends the sessions (and the
    servers' processes); it also runs at exit."""

    def __init__(self, servers: dict[str, McpServerSettings], timeout: float = 30.0):
        self.timeout = timeout  # per tool call
        self.by_server: dict[str, list[Tool]] = {}
        self.errors: dict[str, str] = {}
        self._tasks: list[concurrent.futures.Future] = []
        self._stop: asyncio.Event | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="anima-mcp", daemon=True)
        self._thread.start()
        _sdk_log_to_file()
        atexit.register(self.close)
        self._stop = asyncio.run_coroutine_threadsafe(self._make_event(), self._loop).result()
        ready = {name: concurrent.futures.Future() for name in servers}
        tasks = {
            name: asyncio.run_coroutine_threadsafe(self._hold(name, settings, ready[name]), self._loop)
            for name, settings in servers.items()
        }
        self._tasks = list(tasks.values())  # all start at once
        for name, future in ready.items():
            try:
                client, listed = future.result(timeout=START_S)
            except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 — any failure to start is that server's, not ours
                tasks[name].cancel()
                self.errors[name] = reason(exc)
                continue
            self._add_tools(name, client, listed)

    @property
    def tools(self) -> list[Tool]:
        return [t for tools in self.by_server.values() for t in tools]

    async def _make_event(self) -> asyncio.Event:
        return asyncio.Event()

    async def _hold(self, name: str, settings: McpServerSettings, ready: concurrent.futures.Future) -> None:
        """Open the session, report its tools, keep it open until `close()`."""
        from mcp import Client, StdioServerParameters
        from mcp.client.stdio import stdio_client

        async with AsyncExitStack() as stack:
            try:
                if settings.url:
                    import httpx2
                    from mcp.client.streamable_http import streamable_http_client

                    timeout = httpx2.Timeout(30, read=300)  # the SDK's defaults: a server may hold a stream open
                    http = httpx2.AsyncClient(
                        headers=expand_headers(name, settings.headers),
                        timeout=timeout,
                        event_hooks={"response": [_refuse]},
                    )
                    target: Any = streamable_http_client(
                        settings.url, http_client=await stack.enter_async_context(http)
                    )
                elif settings.command:
                    errlog = stack.enter_context(_log_file(name))
                    target = stdio_client(
                        StdioServerParameters(command=settings.command, args=settings.args, env=settings.env or None),
                        errlog=errlog,
                    )
                else:
                    raise ValueError("neither command nor url is set")
                client = await stack.enter_async_context(Client(target, read_timeout_seconds=START_S))
                listed, cursor = [], None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    listed += page.tools
                    cursor = page.next_cursor
                    if not cursor:
                        break
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(exc)
                if isinstance(exc, Exception):
                    return
                raise
            ready.set_result((client, listed))
            await self._stop.wait()

    def _add_tools(self, server: str, client: Any, listed: list[Any]) -> None:
        taken, mine = {t.name for t in self.tools}, self.by_server.setdefault(server, [])
        for remote in listed:
            name = tool_name(server, remote.name)
            if name in taken:
                log.warning("MCP server '%s': skipping tool '%s' (its name clashes with another)", server, remote.name)
                continue
            taken.add(name)
            schema = {"type": "object", "properties": {}, **(remote.input_schema or {})}
            read_only = bool(remote.annotations and remote.annotations.read_only_hint)
            description = (remote.description or remote.name).strip() + f" (from MCP server '{server}')"
            mine.append(
                Tool(name, description, schema, self._caller(server, client, remote.name), side_effects=not read_only)
            )

    def _caller(self, server: str, client: Any, remote_name: str):
        def call(**arguments: Any) -> str:
            from mcp import MCPError

            if not self._loop.is_running():
                raise ToolError(f"MCP server '{server}' is closed", "restart anima")
            future = asyncio.run_coroutine_threadsafe(
                client.call_tool(remote_name, arguments, read_timeout_seconds=self.timeout), self._loop
            )
            try:
                result = future.result(timeout=self.timeout + 5)
            except (TimeoutError, concurrent.futures.TimeoutError) as exc:
                future.cancel()
                raise ToolError(
                    f"MCP server '{server}' did not answer {remote_name} in {self.timeout:g} s", "try again later"
                ) from exc
            except MCPError as exc:
                raise ToolError(f"MCP server '{server}': {exc}", "see `anima mcp list`") from exc
            except Exception as exc:  # the session broke (the server died): the model reads why
                raise ToolError(f"MCP server '{server}' failed: {reason(exc)}", "see `anima mcp list`") from exc
            if result.is_error:
                raise ToolError(result_text(result) or f"{remote_name} failed")
            return result_text(result)

        return call

    def close(self) -> None:
        """End every session (stopping stdio servers) and the loop. Safe to call twice."""
        if not self._loop.is_running():
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        concurrent.futures.wait(self._tasks, timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        atexit.unregister(self.close)


def connect(config: Any) -> McpClients:
    """Start every configured server; one warning line for each that does not start."""
    clients = McpClients(config.mcp, timeout=config.tools.timeout_s)
    for name, why in clients.errors.items():
        log.warning("MCP server '%s' is not available: %s", name, why)
    return clients


def mcp_tools(config: Any) -> list[Tool]:
    """The tools of every configured MCP server that started (none when none is set)."""
    return connect(config).tools if config.mcp else []
