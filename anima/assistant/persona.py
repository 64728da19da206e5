"""Personas: a name, a system prompt and a style, each a small TOML file.

Built-ins ship in `anima/assistant/personas/`; the user's own go in
`<data dir>/personas/*.toml` and win over a built-in of the same name.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path

from anima.config import data_dir
from anima.errors import BadInput

BUILTIN_DIR = Path(__file__).parent / "personas"


@dataclass(frozen=True)
class Persona:
    name: str
    description: str
    system_prompt: str
    style: str = ""
    example_user: str = ""
    example_reply: str = ""
    path: Path | None = None


def _read(path: Path) -> Persona:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return Persona(**data, path=path)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, TypeError) as exc:
        raise BadInput(f"persona file {path} is invalid: {exc}", "it needs name, description and system_prompt keys") from exc


def personas() -> dict[str, Persona]:
    found = {p.name: p for p in map(_read, sorted(BUILTIN_DIR.glob("*.toml")))}
    for path in sorted((data_dir() / "personas").glob("*.toml")):
        try:  # one broken user file must not take the others down
            persona = _read(path)
        except BadInput as exc:
            logging.getLogger("anima").warning("skipping %s", exc)
            continue
        found[persona.name] = persona
    return found


def get_persona(name: str) -> Persona:
    available = personas()
    if name not in available:
        raise BadInput(f"unknown persona '{name}'", f"choose one of: {', '.join(sorted(available))}")
    return available[name]
