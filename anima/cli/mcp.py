"""`anima mcp ...`: MCP both ways — list the servers whose tools anima uses, or serve
the user's memory and reminders to other MCP clients."""

from __future__ import annotations

import json

import typer
from rich.markup import escape

from anima.cli.common import AnimaGroup, JsonOpt, container_for, err, out
from anima.config import config_path, load_config

mcp_app = typer.Typer(
    cls=AnimaGroup,
    help="MCP: the servers whose tools anima uses, and `serve` to share your memory.",
    no_args_is_help=True,
)


@mcp_app.command("list")
def list_(as_json: bool = JsonOpt) -> None:
    """Each configured MCP server and its tools, or why it is not available."""
    from anima.tools.mcp import McpClients

    config = load_config()
    if not config.mcp:
        out.print(
            'no MCP servers configured: add a [mcp.NAME] table with command = "..." (or url = "...") '
            f"to {config_path()}",
            highlight=False,
        )
        return
    clients = McpClients(config.mcp, timeout=config.tools.timeout_s)
    clients.close()
    rows = {}
    for name in config.mcp:
        tools = [
            {"name": t.name, "description": t.description, "side_effects": t.side_effects}
            for t in clients.by_server.get(name, [])
        ]
        rows[name] = {"error": clients.errors[name]} if name in clients.errors else {"tools": tools}
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        for name, row in rows.items():
            if "error" in row:
                err.print(f"[red]{escape(name)}[/red]: not available: {escape(row['error'])}", highlight=False)
                continue
            out.print(f"[bold]{escape(name)}[/bold]: {len(row['tools'])} tools", highlight=False)
            for t in row["tools"]:
                out.print(f"  {escape(t['name'])}  [dim]{escape(t['description'])}[/dim]", highlight=False)
    if clients.errors:
        raise typer.Exit(1)


@mcp_app.command("serve")
def serve(
    http: int | None = typer.Option(
        None, "--http", help="Serve streamable HTTP on 127.0.0.1:PORT (path /mcp) instead of stdio; needs your API key."
    ),
) -> None:
    """Serve your memory, reminders and notes as an MCP server (stdio by default)."""
    from anima.mcp_server import create_server, http_app

    config = load_config()
    if http is None:
        create_server(container_for(config)).run()
        return
    import uvicorn

    from anima.cli.serve import accounts

    app = http_app(container_for(config), accounts())
    err.print(
        f"anima MCP server on http://127.0.0.1:{http}/mcp "
        f"(send `Authorization: Bearer <key>`, a key of user '{config.user}')",
        highlight=False,
    )
    uvicorn.run(app, host="127.0.0.1", port=http, log_level="warning")
