"""What every command module shares: consoles, the error-translating group, options."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from typer.core import TyperGroup

from anima.config import data_dir
from anima.errors import AnimaError, BadInput
from anima.store.db import is_utf8

out = Console()
err = Console(stderr=True, soft_wrap=True)  # an error stays on one line


class AnimaGroup(TyperGroup):
    """Turns anima's errors into one line on stderr and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AnimaError as exc:
            err.print(
                f"[red]error:[/red] {one_line(exc.message)}"
                + (f" [dim]({one_line(exc.hint)})[/dim]" if exc.hint else ""),
                highlight=False,
            )
            raise typer.Exit(1) from None
        except (
            typer.Exit,
            typer.Abort,
            typer.TyperException,
            KeyboardInterrupt,
            SystemExit,
            BrokenPipeError,
        ):  # usage errors: exit 2; `| head`
            raise
        except Exception:
            if os.environ.get("ANIMA_DEBUG") == "1" or "PYTEST_CURRENT_TEST" in os.environ:
                raise
            log = _log_path()
            try:
                with log.open("a") as f:
                    f.write(traceback.format_exc())
                where = f"details in {log}"
            except OSError:  # e.g. the disk is full: say so without a traceback
                where = "run with ANIMA_DEBUG=1 for details"
            err.print(f"[red]internal error[/red] (a bug in anima; {where})")
            raise typer.Exit(1) from None


def one_line(text: str) -> str:
    """Text for a message: shown as typed (no markup), line breaks as spaces, so an error
    that quotes the user's input still takes one line."""
    return escape(" ".join(text.splitlines()))


def read_stdin() -> str:
    """All of stdin, as text."""
    try:
        text = sys.stdin.read()
    except UnicodeDecodeError as exc:
        raise not_utf8() from exc
    if not is_utf8(text):
        raise not_utf8()
    return text


def not_utf8() -> BadInput:
    return BadInput("the input is not UTF-8 text", "convert it first, e.g. `iconv -f latin1 -t utf-8`")


def _log_path() -> Path:
    for folder in (data_dir() / "logs", Path.home() / ".cache" / "anima"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return folder / "anima.log"
        except OSError:
            continue
    return Path("/tmp/anima.log")


@dataclass
class Parts:
    """What the CLI's containers are built with besides the config: nothing, for a person;
    a test hands in its own parts as the command line's object,
    `CliRunner().invoke(app, args, obj=Parts(chat_model=fake))`, instead of patching `build`."""

    chat_model: Any = None
    embedder: Any = None


_parts = Parts()  # of this invocation: set by the root callback from the context's object


def use_parts(obj: Any) -> None:
    """The root callback hands over the command line's object (Parts, or None)."""
    global _parts
    _parts = obj if isinstance(obj, Parts) else Parts()


def container_for(config):
    """The command's container for `config` (each part built when first used), with the
    Parts the command line was invoked with."""
    from anima.app import build

    return build(config, chat_model=_parts.chat_model, embedder=_parts.embedder)


JsonOpt = typer.Option(False, "--json", help="Print JSON instead of text.")
MAX_INT = 2**63 - 1  # SQLite's largest integer: a bigger id or count is a usage error, not a crash
IdArg = typer.Argument(..., min=1, max=MAX_INT, help="Its number, as the list shows it.")


def bytes_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
    )


def steps_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=err,
    )


@contextlib.contextmanager
def labelled_steps() -> Iterator[Callable[[str, int, int], None]]:
    """A progress display with one bar per label: yields `update(label, done, total)`."""
    tasks: dict[str, TaskID] = {}
    with steps_progress() as progress:

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total)
            progress.update(tasks[label], completed=done, total=total)

        yield update
