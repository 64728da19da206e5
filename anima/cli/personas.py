"""`anima personas ...`: see the personas, pick the default, add your own."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from anima.cli.common import AnimaGroup, JsonOpt, err, out
from anima.config import config_path, load_config, read_toml
from anima.persona import BUILTIN_DIR, Persona, add_persona, get_persona, personas

personas_app = typer.Typer(cls=AnimaGroup, help="List, show, choose and add personas.", no_args_is_help=True)


def _row(p: Persona) -> dict:
    return {
        "name": p.name,
        "description": p.description,
        "style": p.style,
        "system_prompt": p.system_prompt,
        "example_user": p.example_user,
        "example_reply": p.example_reply,
        "source": "built-in" if p.builtin else "user",
        "path": str(p.path),
    }


@personas_app.command("list")
def list_(as_json: bool = JsonOpt) -> None:
    """Every persona, built-in and your own; * marks the default."""
    found = sorted(personas().values(), key=lambda p: p.name)
    if as_json:
        print(
            json.dumps(
                [{k: v for k, v in _row(p).items() if k in ("name", "description", "style", "source")} for p in found],
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    default = load_config().persona
    table = Table("", "name", "description", "source", title=f"{len(found)} personas")
    for p in found:
        table.add_row(
            "*" if p.name == default else "", p.name, escape(p.description), "built-in" if p.builtin else "user"
        )
    out.print(table)


@personas_app.command()
def show(name: str, as_json: bool = JsonOpt) -> None:
    """All of one persona: prompt, style and example exchange."""
    row = _row(get_persona(name))
    if as_json:
        print(json.dumps(row, indent=2, ensure_ascii=False))
        return
    out.print(f"[bold cyan]{row['name']}[/bold cyan] ({row['source']}) {escape(row['description'])}", highlight=False)
    for label, key in (
        ("style", "style"),
        ("system prompt", "system_prompt"),
        ("example, user", "example_user"),
        ("example, reply", "example_reply"),
        ("file", "path"),
    ):
        if row[key]:
            out.print(f"[dim]{label}:[/dim] {escape(row[key])}", highlight=False)


@personas_app.command()
def use(name: str) -> None:
    """Make NAME the default persona (writes `persona` in config.toml)."""
    name = get_persona(name).name
    path = set_default_persona(name)
    out.print(f"default persona: {name} (in {path})", highlight=False, markup=False)
    if os.environ.get("ANIMA_PERSONA", name) != name:
        err.print(f"note: ANIMA_PERSONA={os.environ['ANIMA_PERSONA']} is set and wins over the file")


@personas_app.command()
def add(path: Path = typer.Argument(..., help="A persona TOML file: name, description, system_prompt, ...")) -> None:
    """Check a persona file and copy it into your personas."""
    p = add_persona(path)
    shadows = (BUILTIN_DIR / f"{p.name}.toml").exists()
    out.print(
        f"added persona {p.name}" + (" (replaces the built-in of that name)" if shadows else "") + f": {p.path}",
        highlight=False,
        markup=False,
    )


def set_default_persona(name: str) -> Path:
    """Set the top-level `persona = "NAME"` in config.toml, keeping every other line."""
    path = config_path()
    read_toml(path)  # a broken file is reported, never overwritten
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    first_table = next((i for i, line in enumerate(lines) if line.lstrip().startswith("[")), len(lines))
    setting = f'persona = "{name}"'  # names are [a-z0-9-]: no quoting needed
    at = next((i for i in range(first_table) if re.match(r"\s*persona\s*=", lines[i])), None)
    if at is None:
        lines.insert(0, setting)
    else:
        lines[at] = setting
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
