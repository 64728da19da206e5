"""`anima inbox`, `anima remind`, `anima reminders`, `anima todo`, `anima briefing` and
`anima daemon`: none of them loads a model."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from anima.cli.common import AnimaGroup, IdArg, JsonOpt, container_for, err, out
from anima.config import load_config
from anima.proactive import inbox
from anima.tools import reminders as rm

inbox_app = typer.Typer(
    cls=AnimaGroup,
    help="What anima raised on its own: due reminders, dates, check-ins, briefings.",
    invoke_without_command=True,
)
todo_app = typer.Typer(cls=AnimaGroup, help="To-dos: add, list, done.", no_args_is_help=True)
AllOpt = typer.Option(False, "--all", help="Also show finished ones.")


def _open():
    """The configured user's store and settings (no model is loaded)."""
    container = container_for(load_config())
    return container.store, container.config


def _when(value: str) -> str:
    return datetime.fromisoformat(value).astimezone().strftime("%a %d %b %H:%M") if value else ""


def _print(item: inbox.Item) -> None:
    out.print(f"[bold]#{item.id}[/bold] [cyan]{item.kind}[/cyan] {escape(item.title)}", highlight=False)
    if item.body:
        out.print(item.body, highlight=False, markup=False)
    out.print(f"[dim]why: {escape(item.reason)}[/dim]", highlight=False)


# --- the inbox ------------------------------------------------------------------------------


@inbox_app.callback()
def inbox_list(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", help="Also show done, snoozed and dismissed items."),
    as_json: bool = JsonOpt,
) -> None:
    """New items, newest first (`anima inbox done|snooze|dismiss ID` to act on one)."""
    if ctx.invoked_subcommand is not None:
        return
    store, _ = _open()
    found = inbox.list_items(store, rm.local_now(), all=all_)
    if as_json:
        print(json.dumps([i.to_dict() for i in found], indent=2, ensure_ascii=False))
        return
    if not found:
        out.print("the inbox is empty" + ("" if all_ else " (--all shows finished items)"))
        return
    table = Table("id", "kind", "what", "why", "when", "status", title=f"{len(found)} item(s)")
    for i in found:
        table.add_row(
            str(i.id),
            i.kind,
            escape(i.title + (f"\n{i.body}" if i.body and i.kind != "briefing" else "")),
            escape(i.reason),
            _when(i.created),
            i.status + (f" until {_when(i.snooze_until)}" if i.snooze_until else ""),
        )
    out.print(table)


@inbox_app.command("done")
def inbox_done(item_id: int = IdArg) -> None:
    """Mark an item done (a one-off reminder or to-do behind it is closed too)."""
    store, _ = _open()
    out.print(f"done: {inbox.done(store, item_id, rm.local_now()).title}", highlight=False, markup=False)


@inbox_app.command("snooze")
def inbox_snooze(
    item_id: int = IdArg,
    until: str = typer.Option("in 1 hour", "--until", help="When it comes back: 'tomorrow at 9', 'in 2 hours'..."),
) -> None:
    """Put an item away until a time; it comes back as new then."""
    store, _ = _open()
    item = inbox.snooze(store, item_id, until, rm.local_now())
    out.print(f"snoozed until {_when(item.snooze_until)}: {item.title}", highlight=False, markup=False)


@inbox_app.command("dismiss")
def inbox_dismiss(item_id: int = IdArg) -> None:
    """Not wanted (anima learns: a kind dismissed again and again stops notifying)."""
    store, _ = _open()
    out.print(f"dismissed: {inbox.dismiss(store, item_id, rm.local_now()).title}", highlight=False, markup=False)


# --- reminders and to-dos --------------------------------------------------------------------


def remind(
    text: str = typer.Argument(..., help="What to be reminded of."),
    at: str = typer.Option(..., "--at", help="'tomorrow at 9', 'in 2 hours', 'Friday at 5pm', 'every Monday at 9'..."),
) -> None:
    """Set a reminder."""
    store, _ = _open()
    r = rm.add_reminder(store, text, at, rm.local_now())
    out.print(
        f"reminder #{r.id} set for {rm.show(r.due_at())}" + (f", then {r.every}" if r.every else "") + f": {r.text}",
        highlight=False,
        markup=False,
    )


def _listing(rows: list[rm.Reminder], as_json: bool, empty: str) -> None:
    if as_json:
        print(json.dumps([r.to_dict() for r in rows], indent=2, ensure_ascii=False))
    elif not rows:
        out.print(empty)
    else:
        for r in rows:
            out.print(r.describe(), highlight=False, markup=False)


def reminders(all_: bool = AllOpt, as_json: bool = JsonOpt) -> None:
    """Reminders, soonest first."""
    store, _ = _open()
    _listing(rm.list_reminders(store, all_), as_json, "no reminders: `anima remind TEXT --at WHEN` sets one")


@todo_app.command("add")
def todo_add(
    text: str, due: Optional[str] = typer.Option(None, "--due", help="Optional: 'Friday at 5pm', 'every month'...")
) -> None:
    """Add a to-do."""
    store, _ = _open()
    out.print(f"added to-do {rm.add_todo(store, text, due, rm.local_now()).describe()}", highlight=False, markup=False)


@todo_app.command("list")
def todo_list(all_: bool = AllOpt, as_json: bool = JsonOpt) -> None:
    """Open to-dos, soonest due first."""
    store, _ = _open()
    _listing(rm.list_todos(store, all_), as_json, "no to-dos: `anima todo add TEXT`")


@todo_app.command("done")
def todo_done(todo_id: int = IdArg) -> None:
    """Tick off a to-do."""
    store, _ = _open()
    out.print(f"done: {rm.done(store, todo_id, rm.local_now()).describe()}", highlight=False, markup=False)


# --- the briefing and the daemon ----------------------------------------------------------------


def briefing(as_json: bool = JsonOpt) -> None:
    """Today's briefing, now: calendar, due items, goals, coming dates, what you may need."""
    from anima.proactive.triggers import briefing as make_briefing

    store, config = _open()
    item = make_briefing(store, rm.local_now(), config.proactive.lookahead_days)
    if as_json:
        print(json.dumps({"title": item.title, "lines": item.data["lines"]}, indent=2, ensure_ascii=False))
        return
    out.print(f"[bold]{escape(item.title)}[/bold]", highlight=False)
    out.print(item.body, highlight=False, markup=False)


def daemon(interval: float = typer.Option(30.0, "--interval", help="Seconds between checks.")) -> None:
    """Run the scheduler in the foreground until Ctrl-C, printing what it raises."""
    from anima.proactive import Scheduler
    from anima.proactive.notify import Notifier

    store, config = _open()
    notifier = Notifier(config.proactive, store)

    def deliver(item: inbox.Item) -> None:
        out.print(f"[dim]{rm.local_now():%H:%M}[/dim] notified:", highlight=False)
        _print(item)
        notifier(item)

    scheduler = Scheduler(store, config, deliver=deliver, interval=interval)
    out.print(f"anima daemon for {config.user}: checking every {interval:g} s (Ctrl-C stops)")

    def report(added: list[inbox.Item]) -> None:
        for name, due in scheduler.missed:
            err.print(f"missed while anima was off: {name} (due {rm.show(due)}); run now")
        scheduler.missed.clear()
        for item in added:
            if item.notify != "sent":
                out.print(
                    f"[dim]{rm.local_now():%H:%M}[/dim] in the inbox "
                    f"({'held' if item.notify == 'pending' else 'not notified'}):",
                    highlight=False,
                )
                _print(item)

    try:
        scheduler.run(report)
    except KeyboardInterrupt:
        out.print("stopped")


def register(app: typer.Typer) -> None:
    app.add_typer(inbox_app, name="inbox")
    app.add_typer(todo_app, name="todo")
    for command in (remind, reminders, briefing, daemon):
        app.command()(command)
