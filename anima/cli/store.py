"""`anima store ...`: where the user's data is kept."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.markup import escape
from rich.table import Table

from anima.cli.common import AnimaGroup, JsonOpt, labelled_steps, out
from anima.config import data_dir, load_config

store_app = typer.Typer(
    cls=AnimaGroup, help="Where the user's data is kept: move it to PostgreSQL.", no_args_is_help=True
)


@store_app.command("migrate")
def migrate(
    to: str = typer.Option(..., "--to", help="The PostgreSQL server to copy into: postgresql://... (with pgvector)."),
    as_json: bool = JsonOpt,
) -> None:
    """Copy the user's store (conversations, episodes, memories, notes, goals, calendar,
    documents, reminders, inbox, ...) from their encrypted file into PostgreSQL, in one
    transaction, ids kept; then check
    the copy (row counts, sampled records and searches). Exit 1 when the check fails:
    nothing is kept then. The user's schema there must be empty."""
    from anima.store.migrate import copy_store, open_stores
    from anima.store.pg_db import where

    config = load_config()
    with open_stores(data_dir(), config.user, to) as (source, target), labelled_steps() as update:
        report = copy_store(source, target, progress=update)
    if as_json:
        print(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    else:
        copied = ", ".join(f"{n:,} {table}" for table, n in report.rows.items() if n) or "nothing"
        out.print(
            f"copied to {report.schema} at {escape(where(to))}: {copied} in {report.load_s:.1f} s; "
            f"vectors indexed in {report.index_s:.1f} s",
            highlight=False,
        )
        table = Table(
            "check",
            "SQLite",
            "PostgreSQL",
            "",
            title=f"check of the copy of {report.user}'s store",
            caption="not checked: they differ by design "
            "(HNSW is approximate; Porter vs Snowball stems, BM25 vs ts_rank)",
        )
        for c in report.checks:
            table.add_row(
                c.what,
                c.sqlite,
                c.postgres,
                "[dim]not checked[/dim]" if not c.checked else "[green]ok[/green]" if c.ok else "[red]differs[/red]",
            )
        out.print(table)
        if report.committed:
            out.print(
                "[green]passed[/green]: committed. "
                "To use it, set store.url to this URL (config.toml, or ANIMA_STORE__URL)."
            )
        else:
            out.print("[red]failed[/red]: the copy was rolled back; PostgreSQL keeps nothing of it.")
    if not report.committed:
        raise typer.Exit(1)
