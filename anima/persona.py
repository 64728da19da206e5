"""Personas: a name, a system prompt and a style, each a small TOML file.

Built-ins ship in `anima/personas/`; the user's own go in
`<data dir>/personas/*.toml` (`anima personas add FILE`) and win over a built-in
of the same name. Memory and the guard are the same whichever persona speaks.
"""

from __future__ import annotations

import difflib
import logging
import re
import shutil
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from anima.config import data_dir
from anima.errors import BadInput

BUILTIN_DIR = Path(__file__).parent / "personas"
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")  # also a model name on the API and a file name
REQUIRED = ("name", "description", "system_prompt")


@dataclass(frozen=True)
class Persona:
    name: str
    description: str
    system_prompt: str
    style: str = ""
    example_user: str = ""
    example_reply: str = ""
    path: Path | None = None

    @property
    def builtin(self) -> bool:
        return self.path is not None and self.path.parent == BUILTIN_DIR


KEYS = [f.name for f in fields(Persona) if f.name != "path"]


def user_dir() -> Path:
    return data_dir() / "personas"


def load_persona(path: Path) -> Persona:
    """Read and check one persona file; BadInput says what is wrong with it."""
    hint = f"a persona file is TOML with {', '.join(REQUIRED)} (and optionally style, example_user, example_reply)"
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"cannot read persona file {path}: {exc.strerror}", "check the path") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"persona file {path} is not valid TOML: {exc}", hint) from exc
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, arrays nested 100,000 deep
        raise BadInput(f"persona file {path} is not valid TOML: {type(exc).__name__}", hint) from None
    if unknown := sorted(set(data) - set(KEYS)):
        raise BadInput(f"persona file {path} has unknown keys: {', '.join(unknown)}", hint)
    if missing := [k for k in REQUIRED if not (isinstance(data.get(k), str) and data[k].strip())]:
        raise BadInput(f"persona file {path} lacks {', '.join(missing)}", hint)
    if not_text := [k for k, v in data.items() if not isinstance(v, str)]:
        raise BadInput(f"persona file {path}: {', '.join(not_text)} must be text", hint)
    if not NAME.match(data["name"]):
        raise BadInput(
            f"persona file {path}: invalid name '{data['name']}'",
            "use lowercase letters, digits and hyphens, at most 40",
        )
    return Persona(**{k: v.strip() for k, v in data.items()}, path=Path(path))


def personas() -> dict[str, Persona]:
    found = {p.name: p for p in map(load_persona, sorted(BUILTIN_DIR.glob("*.toml")))}
    for path in sorted(user_dir().glob("*.toml")):
        try:  # one broken user file must not take the others down
            persona = load_persona(path)
        except BadInput as exc:
            logging.getLogger("anima").warning("skipping %s", exc)
            continue
        found[persona.name] = persona
    return found


def get_persona(name: str) -> Persona:
    available = personas()
    if name not in available:
        close = difflib.get_close_matches(name, list(available), n=3)
        raise BadInput(
            f"unknown persona '{name}'" + (f"; did you mean {' or '.join(close)}?" if close else ""),
            "`anima personas list` shows them all",
        )
    return available[name]


def add_persona(path: Path) -> Persona:
    """Check a persona file and copy it to the user's personas as `<name>.toml`."""
    persona = load_persona(path)
    target = user_dir() / f"{persona.name}.toml"
    target.parent.mkdir(parents=True, exist_ok=True)
    if Path(path).resolve() != target.resolve():
        shutil.copyfile(path, target)
    return load_persona(target)
