"""`anima calendar | docs | goals | notes ...`: the built-in tools, by hand. None loads a model."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from anima.cli.common import MAX_INT, AnimaGroup, IdArg, JsonOpt, container_for, out
from anima.config import load_config

calendar_app = typer.Typer(cls=AnimaGroup, help="Import, export and ask your calendar (.ics).", no_args_is_help=True)
docs_app = typer.Typer(cls=AnimaGroup, help="Index and search your local documents (read-only).", no_args_is_help=True)
goals_app = typer.Typer(cls=AnimaGroup, help="Goals with milestones and progress.", no_args_is_help=True)
notes_app = typer.Typer(cls=AnimaGroup, help="Notes: write down, list, search.", no_args_is_help=True)


def _store():
    return container_for(load_config()).store


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


# --- calendar ------------------------------------------------------------------------------------


@calendar_app.command("import")
def calendar_import(path: Path = typer.Argument(..., help="An .ics file.")) -> None:
    """Add the events of an .ics file (importing it again replaces them, no duplicates)."""
    from anima.tools.calendar import import_ics

    out.print(f"imported {import_ics(_store(), path)} events from {path}", highlight=False, markup=False)


@calendar_app.command("export")
def calendar_export(path: Path = typer.Argument(..., help="The .ics file to write.")) -> None:
    """Write every event to an .ics file."""
    from anima.tools.calendar import export_ics

    out.print(f"exported {export_ics(_store(), path)} events to {path}", highlight=False, markup=False)


@calendar_app.command("on")
def calendar_on(
    when: str = typer.Argument(..., help="'Thursday', 'tomorrow', 'next week', 2026-05-14 ..."), as_json: bool = JsonOpt
) -> None:
    """What is on a day or in a period."""
    from anima.tools.calendar import describe, events_between, resolve_span

    span = resolve_span(when, datetime.now())
    events = events_between(_store(), span.start, span.end)
    if as_json:
        _print_json(events)
    elif not events:
        out.print(f"nothing on {when} ({span.start:%a %Y-%m-%d})", highlight=False, markup=False)
    else:
        for e in events:
            out.print(describe(e), highlight=False, markup=False)


# --- documents -----------------------------------------------------------------------------------


@docs_app.command("index")
def docs_index(
    folder: Optional[Path] = typer.Argument(None, help="A folder (default: config tools.documents)."),
) -> None:
    """Index a folder's text files for search; only changed files are read again."""
    from anima.tools.documents import index_documents

    config = load_config()
    folders = [str(folder)] if folder else list(config.tools.documents)
    for report in index_documents(container_for(config).store, folders):
        out.print(report.summary(), highlight=False, markup=False)


@docs_app.command("search")
def docs_search(
    query: str, k: int = typer.Option(5, "--k", min=1, max=MAX_INT, help="How many passages."), as_json: bool = JsonOpt
) -> None:
    """Passages of your documents that match, with file:lines to find them."""
    from anima.tools.documents import search

    hits = search(_store(), query, k)
    if as_json:
        _print_json(hits)
    elif not hits:
        out.print(
            f"no passage matches '{query}' (index a folder first: anima docs index FOLDER)",
            highlight=False,
            markup=False,
        )
    else:
        for h in hits:
            out.print(f"[bold]{escape(h['cite'])}[/bold]  {escape(h['snippet'])}", highlight=False)


# --- goals ---------------------------------------------------------------------------------------


@goals_app.command("add")
def goals_add(
    title: str,
    why: str = typer.Option("", "--why", help="Why it matters."),
    due: Optional[str] = typer.Option(None, "--due", help="'in 3 months', 'next Friday', 2026-12-01 ..."),
    milestones: Optional[list[str]] = typer.Option(
        None, "--milestone", "-m", help="A step, in order; repeat for more."
    ),
) -> None:
    """A new goal."""
    from anima.tools.goals import add_goal, describe

    out.print(
        "added "
        + describe(add_goal(_store(), title, why=why, due=due, milestones=milestones or [], now=datetime.now())),
        highlight=False,
        markup=False,
    )


@goals_app.command("list")
def goals_list(
    status: str = typer.Option("active", "--status", help="active, done, dropped or all."), as_json: bool = JsonOpt
) -> None:
    """Goals with progress, soonest due first."""
    from anima.tools.goals import list_goals

    goals = list_goals(_store(), None if status == "all" else status)
    if as_json:
        _print_json(goals)
        return
    if not goals:
        out.print(
            f"no {'' if status == 'all' else status + ' '}goals (add one: anima goals add TITLE)",
            highlight=False,
            markup=False,
        )
        return
    table = Table("id", "goal", "progress", "due", "status", "milestones")
    for g in goals:
        steps = ", ".join(("✓ " if m["done"] else "") + m["title"] for m in g["milestones"])
        table.add_row(str(g["id"]), escape(g["title"]), f"{g['progress']}%", g["due"] or "", g["status"], escape(steps))
    out.print(table)


@goals_app.command("done")
def goals_done(
    goal_id: int = IdArg,
    milestone: Optional[str] = typer.Argument(None, help="A milestone's number or words; without it, the whole goal."),
) -> None:
    """Mark a milestone, or the whole goal, done."""
    from anima.tools.goals import complete_milestone, describe, set_status

    store = _store()
    goal = complete_milestone(store, goal_id, milestone) if milestone else set_status(store, goal_id, "done")
    out.print(describe(goal), highlight=False, markup=False)


@goals_app.command("progress")
def goals_progress(goal_id: int = IdArg, percent: int = typer.Argument(..., help="0-100.")) -> None:
    """Set a goal's progress (for goals without milestones)."""
    from anima.tools.goals import describe, set_progress

    out.print(describe(set_progress(_store(), goal_id, percent)), highlight=False, markup=False)


# --- notes ---------------------------------------------------------------------------------------


@notes_app.command("add")
def notes_add(text: str, title: str = typer.Option("", "--title")) -> None:
    """Write something down."""
    from anima.tools.notes import add_note

    note = add_note(_store(), text, title)
    out.print(f"saved note #{note['id']}", highlight=False, markup=False)


@notes_app.command("list")
def notes_list(limit: int = typer.Option(20, "--limit", min=1, max=MAX_INT), as_json: bool = JsonOpt) -> None:
    """The latest notes, newest first."""
    from anima.tools.notes import list_notes

    _show_notes(list_notes(_store(), limit), as_json, "no notes yet (add one: anima notes add TEXT)")


@notes_app.command("search")
def notes_search(query: str, k: int = typer.Option(5, "--k", min=1, max=MAX_INT), as_json: bool = JsonOpt) -> None:
    """Notes that share words with the query, best first."""
    from anima.tools.notes import search_notes

    _show_notes(search_notes(_store(), query, k), as_json, f"no notes about '{query}'")


@notes_app.command("delete")
def notes_delete(note_id: int = IdArg) -> None:
    """Delete a note for good."""
    from anima.tools.notes import delete_note

    delete_note(_store(), note_id)
    out.print(f"deleted note #{note_id}")


def _show_notes(notes: list[dict], as_json: bool, empty: str) -> None:
    if as_json:
        _print_json(notes)
    elif not notes:
        out.print(empty, highlight=False, markup=False)
    else:
        for n in notes:
            out.print(
                f"#{n['id']} " + (f"[bold]{escape(n['title'])}[/bold]: " if n["title"] else "") + escape(n["text"]),
                highlight=False,
            )
