"""`anima memory ...`: everything kept about the user, in the user's hands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from anima.cli.common import MAX_INT, AnimaGroup, IdArg, JsonOpt, container_for, err, out, steps_progress
from anima.config import load_config
from anima.errors import BadInput
from anima.memory.service import dumps

memory_app = typer.Typer(
    cls=AnimaGroup, help="See, search, change and move what anima remembers.", no_args_is_help=True
)


def _memory(with_model: bool = False):
    """The user's memory; with the learner's model (`memory.learn_model`) only when
    learning, so that listing or editing never loads a model."""
    from anima.memory import MemoryService

    container = container_for(load_config())
    return container.memory if with_model else MemoryService(container.store, container.embedder)


def _rows(memories) -> list[dict]:
    return [
        {
            "id": m.id,
            "kind": m.kind,
            "text": m.text,
            "date": m.ref_date,
            "valid_from": m.valid_from[:10],
            "valid_to": m.valid_to,
            "confidence": m.confidence,
        }
        for m in memories
    ]


def _table(rows: list[dict], title: str) -> Table:
    table = Table("id", "kind", "memory", "refers to", "since", "until", title=title)
    for r in rows:
        table.add_row(
            str(r["id"]),
            escape(r["kind"]),
            escape(r["text"]),
            escape(r["date"] or ""),
            r["valid_from"],
            (r["valid_to"] or "")[:10],
        )
    return table


@memory_app.command("list")
def list_(
    kind: Optional[str] = typer.Option(None, "--kind", help="fact, preference, event, plan, person, relation"),
    all_: bool = typer.Option(False, "--all", help="Include memories that were superseded."),
    as_json: bool = JsonOpt,
) -> None:
    """Memories, oldest first."""
    memory = _memory()
    rows = _rows(memory.store.list_memories(kind=kind, include_invalid=all_))
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    elif not rows:
        out.print("no memories yet: talk with anima, or `anima memory add TEXT`")
    else:
        out.print(_table(rows, f"{len(rows)} memories"))


@memory_app.command()
def search(
    query: str, k: int = typer.Option(8, "--k", min=1, max=MAX_INT, help="How many results."), as_json: bool = JsonOpt
) -> None:
    """Hybrid search (words + meaning + time) over memories and past messages."""
    hits = _memory().recall(query, k=k)
    rows = [
        {"kind": h.kind, "id": h.id, "when": h.when, "speaker": h.speaker, "text": h.text, "score": round(h.score, 4)}
        for h in hits
    ]
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table("what", "id", "when", "text", "score", title=f"'{escape(query)}'")
    for r in rows:
        table.add_row(
            r["kind"],
            str(r["id"]),
            r["when"][:16].replace("T", " "),
            escape((f"{r['speaker']}: " if r["speaker"] else "") + r["text"]),
            f"{r['score']:.4f}",
        )
    out.print(table)


@memory_app.command()
def add(
    text: str,
    kind: str = typer.Option("fact", "--kind"),
    date: Optional[str] = typer.Option(None, "--date", help="The day it refers to, YYYY-MM-DD."),
) -> None:
    """Remember something, in your words."""
    m = _memory().add(text, kind=kind, ref_date=date)
    out.print(f"remembered #{m.id}: {m.text}", highlight=False, markup=False)


@memory_app.command()
def edit(
    memory_id: int = IdArg,
    text: Optional[str] = typer.Argument(None, help="The new text."),
    kind: Optional[str] = typer.Option(None, "--kind"),
) -> None:
    """Change a memory's text or kind."""
    if text is None and kind is None:
        raise BadInput("nothing to change", "give the new TEXT and/or --kind")
    m = _memory().edit(memory_id, text, kind)
    out.print(f"#{m.id} is now: {m.text} ({m.kind})", highlight=False, markup=False)


@memory_app.command()
def forget(memory_id: int = IdArg) -> None:
    """Delete a memory for good (its row, its search entries, its vector)."""
    _memory().forget(memory_id)
    out.print(f"forgot #{memory_id}")


@memory_app.command()
def why(memory_id: int = IdArg, as_json: bool = JsonOpt) -> None:
    """Where a memory came from: the messages it was learned from."""
    memory, episodes = _memory().why(memory_id)
    if as_json:
        print(
            json.dumps(
                {
                    "memory": _rows([memory])[0],
                    "sources": [{"id": e.id, "when": e.ts, "speaker": e.speaker, "text": e.text} for e in episodes],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    out.print(f"#{memory.id} {memory.text}", highlight=False, markup=False)
    if not episodes:
        out.print("[dim]added by hand (no source messages)[/dim]")
    for e in episodes:
        out.print(
            f"  [dim]{e.ts[:16].replace('T', ' ')}[/dim] {escape(e.speaker or e.role)}: {escape(e.text)}",
            highlight=False,
        )


@memory_app.command()
def export(path: str = typer.Argument("-", help="File to write, or - for stdout.")) -> None:
    """Everything remembered, as JSON that `anima memory import` reads back."""
    text = dumps(_memory().export())
    if path == "-":
        print(text)
    else:
        try:
            Path(path).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise BadInput(
                f"cannot write {path[:80]}: {exc.strerror}", "check that the folder exists and is writable"
            ) from exc
        err.print(f"exported to {path}", highlight=False, markup=False)


@memory_app.command("import")
def import_(path: str = typer.Argument(..., help="A file from `anima memory export`, or -.")) -> None:
    """Read memories back from an export."""
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        data = json.loads(raw)
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}", "check the path") from exc
    except (ValueError, RecursionError) as exc:  # RecursionError: brackets nested thousands deep
        raise BadInput(f"{path} is not JSON: {exc}", "give a file made by `anima memory export`") from exc
    out.print(f"imported {_memory().import_(data)} memories")


@memory_app.command()
def ingest(
    path: Path = typer.Argument(..., help="A LoCoMo-style JSON file or a ChatGPT conversations.json export."),
    learn: bool = typer.Option(
        False,
        "--learn",
        help="Also distil memories with the model (slow: about 70 s per 100 messages, default model, 2 cores).",
    ),
    speaker: Optional[str] = typer.Option(None, "--me", help="Your name in a LoCoMo file (default: its speaker_a)."),
) -> None:
    """Import a conversation history, with its timestamps, into memory."""
    from anima.memory.ingest import read_history

    messages = read_history(path, me=speaker)
    memory = _memory(with_model=learn)
    with steps_progress() as progress:
        task = progress.add_task(f"ingest {path.name}", total=len(messages))
        ids = []
        for m in messages:
            ids.append(memory.observe(m.text, m.role, m.speaker, m.when, source=m.source, ref=m.ref))
            progress.advance(task)
        if learn:
            task = progress.add_task("learn", total=None)
            decisions = memory.learn_history(
                list(zip(ids, messages)),
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    out.print(
        f"ingested {len(messages)} messages from {path}"
        + (f"; {sum(d.action != 'merge' for d in decisions)} memories learned" if learn else ""),
        highlight=False,
        markup=False,
    )
