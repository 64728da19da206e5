"""`anima serve` and `anima users ...`."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from anima.cli.common import AnimaGroup, JsonOpt, container_for, err, out
from anima.config import data_dir, load_config
from anima.errors import BadInput

users_app = typer.Typer(
    cls=AnimaGroup, help="Accounts for `anima serve`: one API key per person or program.", no_args_is_help=True
)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def accounts():
    """The accounts file in the data dir, or the table in PostgreSQL with `store.url`."""
    from anima.store.accounts import open_accounts

    return open_accounts(data_dir(), load_config().store.url)


@users_app.command("add")
def users_add(name: str) -> None:
    """Make an API key for NAME (a new user gets their own encrypted store). Shown once."""
    key = accounts().add(name)
    out.print(f"API key for {name} (shown once; keep it safe):")
    print(key)


@users_app.command("list")
def users_list(as_json: bool = JsonOpt) -> None:
    """Users and their keys (prefixes only)."""
    rows = accounts().list()
    if as_json:
        import json

        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    table = Table("user", "key", "created", "status")
    for r in rows:
        table.add_row(r.name, r.key_prefix + "...", r.created_at, "revoked" if r.revoked else "active")
    out.print(table)


@users_app.command("revoke")
def users_revoke(user_or_key_prefix: str) -> None:
    """Revoke all keys of a user, or one key by its prefix."""
    n = accounts().revoke(user_or_key_prefix)
    if not n:
        raise BadInput(f"no active key for '{user_or_key_prefix}'", "`anima users list` shows users and key prefixes")
    out.print(f"revoked {n} key(s)")


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but loopback needs API keys."),
    port: int = typer.Option(8787, "--port"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Registry name or .gguf path."),
    max_waiting: int = typer.Option(8, "--max-waiting", help="Requests that may wait for the model; more get 429."),
) -> None:
    """Serve the OpenAI-compatible API (with memory) on HOST:PORT."""
    import uvicorn

    from anima.server import Server, create_app

    config = load_config(model=model)
    registry = accounts()
    if host not in LOOPBACK and not registry.any_active():
        raise BadInput(
            f"refusing to listen on {host} with no API keys", "run `anima users add NAME` first, or serve on 127.0.0.1"
        )
    container = container_for(config)
    with err.status("loading models..."):
        server = Server(config, registry, **container.shared(), max_waiting=max_waiting)
    out.print(
        f"anima serving on http://{host}:{port}/v1 "
        f"(OpenAI-compatible; {'API keys required' if registry.any_made() else 'single user, no keys'})"
    )
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    out.print(f"web page: http://{shown}:{port}/ (log in with your API key)")
    from anima.server.inbox import start_schedulers

    schedulers = start_schedulers(server)  # reminders, dates, briefings: into each user's inbox
    try:
        uvicorn.run(create_app(server), host=host, port=port, log_level="warning")
    finally:
        for scheduler in schedulers:
            scheduler.stop()
