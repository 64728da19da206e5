"""MCP both ways, with real processes: a tiny MCP server's tools in the user's Toolbox,
and `anima mcp serve` driven by the SDK's own client. No model: the fake backend's
FakeEmbedder does memory search."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from anima.app import build
from anima.cli import app
from anima.config import McpServerSettings, load_config
from anima.errors import ConfigError
from anima.models.fake import FakeEmbedder
from anima.tools import Toolbox
from anima.tools.mcp import McpClients, expand_headers, tool_name

ANIMA = [sys.executable, "-m", "anima"]

TINY = '''
import os
import time
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("tiny")

@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b

@server.tool()
def boom() -> str:
    """Always fails."""
    raise ValueError("kaput")

@server.tool()
def nap(seconds: float = 30) -> str:
    """Sleeps, then says so."""
    time.sleep(seconds)
    return "awake"

@server.tool()
def die() -> str:
    """Ends the server's process."""
    os._exit(1)

server.run()
'''


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny_server.py"
    path.write_text(TINY)
    return path


def write_config(home, servers: dict[str, dict], timeout_s: float = 2.0) -> None:
    lines = ['backend = "fake"', "", "[tools]", f"timeout_s = {timeout_s}"]
    for name, settings in servers.items():
        lines += ["", f"[mcp.{name}]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("\n".join(lines) + "\n")


def test_tool_names_are_valid_for_the_model():
    assert tool_name("my server", "get.weather") == "my_server__get_weather"
    assert len(tool_name("s", "x" * 100)) == 64


def test_header_values_read_the_environment_and_errors_never_show_them(monkeypatch):
    monkeypatch.setenv("ANIMA_MCP_KEY", "anima-secret")
    headers = {"Authorization": "Bearer ${ANIMA_MCP_KEY}", "X-Note": "$5, $HOME and ${ are kept"}
    assert expand_headers("other", headers) == {
        "Authorization": "Bearer anima-secret",
        "X-Note": "$5, $HOME and ${ are kept",
    }
    with pytest.raises(ConfigError) as unset:
        expand_headers("other", {"Authorization": "Bearer ${ANIMA_NO_SUCH_KEY}"})
    assert str(unset.value) == (
        "environment variable ANIMA_NO_SUCH_KEY, used in header 'Authorization' of [mcp.other], "
        "is not set (export it before starting anima)"
    )
    monkeypatch.setenv("ANIMA_MCP_KEY", "anima-secret\nX-Evil: 1")
    with pytest.raises(ConfigError) as broken:
        expand_headers("other", {"Authorization": "Bearer ${ANIMA_MCP_KEY}"})
    assert "header 'Authorization' of [mcp.other] has characters" in str(broken.value) and "secret" not in str(
        broken.value
    )


def test_the_readme_example_of_headers_loads(anima_home, monkeypatch):
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```toml\n(\[mcp\..*?)```", readme, re.DOTALL)[1]
    anima_home.mkdir(parents=True, exist_ok=True)
    (anima_home / "config.toml").write_text(example)
    monkeypatch.setenv("ANIMA_MCP_KEY", "anima-k")
    assert expand_headers("home", load_config().mcp["home"].headers) == {"Authorization": "Bearer anima-k"}


def test_server_tools_join_the_users_toolbox(anima_home, tiny, caplog):
    write_config(
        anima_home,
        {"tiny": {"command": sys.executable, "args": [str(tiny)]}, "ghost": {"command": "no-such-anima-mcp-server"}},
        timeout_s=3.0,  # with 1 s it failed once while another job held both cores
    )
    with caplog.at_level(logging.WARNING, logger="anima"):
        toolbox = build(load_config(), embedder=FakeEmbedder()).toolbox
    assert "MCP server 'ghost' is not available: command not found: no-such-anima-mcp-server" in caplog.text
    assert {"tiny__add", "tiny__boom", "tiny__nap", "remind"} <= set(toolbox.tools)
    assert not any(name.startswith("ghost__") for name in toolbox.tools)
    add = toolbox.tools["tiny__add"]
    assert (
        add.side_effects is False and toolbox.tools["tiny__boom"].side_effects is True
    )  # read-only by annotation, else not
    assert "Add two whole numbers" in add.description and add.parameters["required"] == ["a", "b"]

    result = toolbox.call("tiny__add", {"a": 2, "b": 40})
    assert result.ok and result.content == "42"
    assert not toolbox.call("tiny__add", {"a": "two", "b": 1}).ok  # the schema is checked before the call

    failed = toolbox.call("tiny__boom", {})
    assert not failed.ok and failed.content.startswith("error:") and "boom" in failed.content

    started = time.monotonic()
    hung = toolbox.call("tiny__nap", {"seconds": 20})
    assert not hung.ok and "did not finish in 3 s" in hung.content and time.monotonic() - started < 10
    assert toolbox.call("tiny__add", {"a": 1, "b": 1}).content == "2"  # the session survives both


def test_failing_servers_are_reported_not_raised(tmp_path):
    crash = tmp_path / "crash.py"
    crash.write_text("import sys; sys.exit(3)\n")
    servers = {
        "gone": McpServerSettings(command="no-such-anima-mcp-server"),
        "crash": McpServerSettings(command=sys.executable, args=[str(crash)]),
        "down": McpServerSettings(url="http://127.0.0.1:9/mcp"),
        "empty": McpServerSettings(),
    }
    clients = McpClients(servers, timeout=1)
    try:
        assert clients.tools == [] and set(clients.errors) == set(servers)
        assert clients.errors["gone"] == "command not found: no-such-anima-mcp-server"
        assert "Connection closed" in clients.errors["crash"]
        assert "ConnectError" in clients.errors["down"]
        assert "neither command nor url" in clients.errors["empty"]
    finally:
        clients.close()


def test_a_server_that_dies_gives_error_results(tiny):
    clients = McpClients({"tiny": McpServerSettings(command=sys.executable, args=[str(tiny)])}, timeout=2)
    toolbox = Toolbox(clients.tools, timeout=5)
    try:
        assert toolbox.call("tiny__add", {"a": 1, "b": 2}).content == "3"
        died = toolbox.call("tiny__die", {})
        assert not died.ok and "MCP server 'tiny'" in died.content
        after = toolbox.call("tiny__add", {"a": 1, "b": 2})
        assert not after.ok and "MCP server 'tiny'" in after.content
    finally:
        clients.close()
    closed = toolbox.call("tiny__add", {"a": 1, "b": 2})
    assert not closed.ok and "MCP server 'tiny' is closed" in closed.content


def test_cli_list_shows_tools_and_one_line_per_broken_server(anima_home, tiny):
    runner = CliRunner()
    assert "no MCP servers configured" in runner.invoke(app, ["mcp", "list"]).stdout
    write_config(
        anima_home,
        {"tiny": {"command": sys.executable, "args": [str(tiny)]}, "ghost": {"command": "no-such-anima-mcp-server"}},
    )
    result = runner.invoke(app, ["mcp", "list"])
    assert "tiny: 4 tools" in result.stdout and "tiny__add" in result.stdout
    assert result.stderr.strip() == "ghost: not available: command not found: no-such-anima-mcp-server"
    assert result.exit_code == 1
    rows = json.loads(runner.invoke(app, ["mcp", "list", "--json"]).stdout)
    assert [t["name"] for t in rows["tiny"]["tools"]] == ["tiny__add", "tiny__boom", "tiny__nap", "tiny__die"]


def _serve_env(anima_home) -> dict[str, str]:
    # A stdio server gets a minimal environment: say where the user's data is, and no model.
    return {"ANIMA_HOME": str(anima_home), "ANIMA_BACKEND": "fake", "ANIMA_GUARD__ENABLED": "false"}


def test_anima_mcp_serve_over_stdio(anima_home):
    from mcp import Client, StdioServerParameters

    async def session() -> dict:
        seen = {}
        params = StdioServerParameters(command=ANIMA[0], args=[*ANIMA[1:], "mcp", "serve"], env=_serve_env(anima_home))
        async with Client(params, read_timeout_seconds=30) as client:
            seen["tools"] = {t.name for t in (await client.list_tools()).tools}

            async def call(name, **arguments):
                r = await client.call_tool(name, arguments)
                return r.is_error, r.content[0].text

            seen["add"] = await call("memory_add", text="My sister Ana lives in Berlin", kind="person")
            seen["bad_kind"] = await call("memory_add", text="x", kind="gossip")
            seen["search"] = await call("memory_search", query="where does Ana live", k=3)
            seen["list"] = await call("memory_list", kind="person")
            seen["remind"] = await call("reminder_add", text="call Ana", when="tomorrow at 9")
            seen["past"] = await call("reminder_add", text="call Ana", when="yesterday")
            seen["reminders"] = await call("reminders_list")
        return seen

    seen = asyncio.run(session())
    assert {"memory_search", "memory_add", "memory_list", "reminders_list", "reminder_add", "notes_search"} <= seen[
        "tools"
    ]
    assert seen["add"] == (False, "remembered #1: My sister Ana lives in Berlin")
    assert seen["bad_kind"][0] and "unknown kind 'gossip'" in seen["bad_kind"][1]
    assert not seen["search"][0] and "[memory #1]" in seen["search"][1] and "Berlin" in seen["search"][1]
    assert seen["list"] == (False, "#1 [person] My sister Ana lives in Berlin")
    assert not seen["remind"][0] and "call Ana" in seen["remind"][1]
    assert seen["past"][0] and "is in the past" in seen["past"][1]
    assert not seen["reminders"][0] and seen["reminders"][1].startswith("#1 call Ana, due")
    # It was the user's own store: anima sees the memory too.
    assert [m.text for m in build(load_config(backend="fake")).store.list_memories()] == [
        "My sister Ana lives in Berlin"
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mcp_serve_http(anima_home, port: int) -> subprocess.Popen:
    """The real `anima mcp serve --http PORT`, once it accepts connections."""
    log = anima_home.parent / "mcp-serve.log"
    with log.open("w") as f:
        proc = subprocess.Popen(
            [*ANIMA, "mcp", "serve", "--http", str(port)],
            env={**_serve_env(anima_home), "PATH": "/usr/bin:/bin"},
            stdout=f,
            stderr=f,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    proc.wait()
    pytest.fail(f"`anima mcp serve --http` did not start: {log.read_text()}")


def test_anima_mcp_serve_over_http_needs_the_users_key(anima_home):
    import httpx
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from anima.cli.serve import accounts

    registry = accounts()  # the same keys as `anima serve`, in $ANIMA_HOME/accounts.db
    key, other_key, old_key = registry.add("local"), registry.add("bob"), registry.add("local")
    assert registry.revoke(old_key[:12]) == 1
    port = _free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }

    def post(headers: dict) -> httpx.Response:
        return httpx.post(
            url, json=initialize, headers={"Accept": "application/json, text/event-stream", **headers}, timeout=10
        )

    async def session(key: str) -> dict:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"})
        async with http, Client(streamable_http_client(url, http_client=http), read_timeout_seconds=30) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            added = await client.call_tool("memory_add", {"text": "Likes green tea", "kind": "preference"})
            found = await client.call_tool("memory_search", {"query": "tea"})
            return {"tools": tools, "add": added.content[0].text, "search": (found.is_error, found.content[0].text)}

    proc = _mcp_serve_http(anima_home, port)
    try:
        for headers in (
            {},
            {"Authorization": "Bearer anima-wrong"},
            {"Authorization": f"Bearer {old_key}"},
            {"Authorization": f"Bearer {other_key}"},
            {"Authorization": key},
        ):
            r = post(headers)
            assert (r.status_code, r.headers.get("www-authenticate")) == (401, "Bearer"), headers
            error = r.json()["error"]
            assert (error["type"], error["code"], error["param"]) == ("authentication_error", "invalid_api_key", None)
            assert "Authorization: Bearer <key>" in error["message"]

        seen = asyncio.run(session(key))
        assert {"memory_search", "memory_add", "memory_list", "reminders_list", "reminder_add", "notes_search"} <= seen[
            "tools"
        ]
        assert seen["add"] == "remembered #1: Likes green tea"
        assert not seen["search"][0] and "green tea" in seen["search"][1]

        registry.revoke("local")  # takes effect at once, no restart
        assert post({"Authorization": f"Bearer {key}"}).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(
    "keys", [[], [("bob", False)], [("local", True)]], ids=["no-keys", "another-users-key", "revoked-key"]
)
def test_anima_mcp_serve_over_http_refuses_to_start_without_a_key(anima_home, keys):
    from anima.cli.serve import accounts

    registry = accounts()
    for name, revoked in keys:
        key = registry.add(name)
        if revoked:
            registry.revoke(key[:12])
    done = subprocess.run(
        [*ANIMA, "mcp", "serve", "--http", str(_free_port())],
        check=False,
        env={**_serve_env(anima_home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == (
        "error: no API key for user 'local', and MCP over HTTP needs one "
        "(run `anima users add local`, then send it as `Authorization: Bearer <key>`)"
    )


def test_anima_uses_another_animas_mcp_server_with_a_key_from_the_environment(anima_home, tmp_path, monkeypatch):
    from anima.cli.serve import accounts

    key = accounts().add("local")
    port = _free_port()
    wrong = "anima-wrong-" + "x" * 32
    monkeypatch.setenv("ANIMA_MCP_KEY", key)
    monkeypatch.setenv("ANIMA_WRONG_KEY", wrong)
    lines = ['backend = "fake"']
    for name, variable in [("other", "ANIMA_MCP_KEY"), ("wrong", "ANIMA_WRONG_KEY"), ("unset", "ANIMA_NO_SUCH_KEY")]:
        lines += [
            "",
            f"[mcp.{name}]",
            f'url = "http://127.0.0.1:{port}/mcp"',
            'headers = { Authorization = "Bearer ${' + variable + '}" }',
        ]
    client_config = tmp_path / "client.toml"  # the served anima reads $ANIMA_HOME/config.toml; this one is the client's
    client_config.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("ANIMA_CONFIG", str(client_config))
    config = load_config()
    assert config.mcp["other"].headers == {
        "Authorization": "Bearer ${ANIMA_MCP_KEY}"
    }  # the key stays out of the config

    proc = _mcp_serve_http(anima_home, port)
    try:
        clients = McpClients(config.mcp, timeout=10)
        try:
            assert {"other__memory_add", "other__memory_search"} <= {t.name for t in clients.tools}
            assert set(clients.errors) == {"wrong", "unset"}
            toolbox = Toolbox(clients.tools, timeout=15)
            assert (
                toolbox.call("other__memory_add", {"text": "Likes green tea", "kind": "preference"}).content
                == "remembered #1: Likes green tea"
            )
            assert "green tea" in toolbox.call("other__memory_search", {"query": "tea"}).content
        finally:
            clients.close()
        assert clients.errors["wrong"].startswith("HTTP 401 Unauthorized: the server did not accept the request's key")
        assert clients.errors["unset"] == (
            "environment variable ANIMA_NO_SUCH_KEY, used in header 'Authorization' of [mcp.unset], "
            "is not set (export it before starting anima)"
        )

        result = CliRunner().invoke(app, ["mcp", "list"])
        assert "other: " in result.stdout and "other__memory_add" in result.stdout
        lines = result.stderr.strip().splitlines()
        assert (
            len(lines) == 2
            and lines[0].startswith("wrong: not available: HTTP 401 Unauthorized")
            and lines[1].startswith("unset: not available: environment variable ANIMA_NO_SUCH_KEY")
        )
        assert result.exit_code == 1
        logged = [f.read_text() for f in (anima_home / "logs").glob("*.log")]  # the SDK's log and the servers'
        for shown in (result.stdout, result.stderr, *clients.errors.values(), *logged):
            assert key not in shown and wrong not in shown and "Traceback" not in shown
    finally:
        proc.terminate()
        proc.wait(timeout=10)
