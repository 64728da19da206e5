"""Tools: what the assistant can do besides talk.

A tool is a name, a description, JSON-schema parameters and a function; `tool(fn)` makes
one from the function itself (its name, its docstring, its type hints). Modules under
`anima/tools/` each offer `tools(ctx) -> list[Tool]`; a `Toolbox` holds the ones a user
has, hands their specs to the model (OpenAI "tools" format) and runs the calls it makes:
arguments checked against the schema, a time limit, and every failure turned into a
result the model can read ("error: ...") rather than an exception.

Tool results are data: the turn pipeline removes instructions hidden in them before the
model sees them (`anima.safety.injection`).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import inspect
import json
import logging
import re
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Callable, Iterable

from anima.errors import AnimaError, BadInput

log = logging.getLogger("anima")

_JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict}


class ToolError(BadInput):
    """A tool could not do what was asked, for a reason the user (or model) can fix."""

    code = "tool_error"


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # a JSON Schema object: {"type": "object", "properties": {...}, "required": [...]}
    fn: Callable[..., Any]  # called with the arguments as keywords; returns text or anything JSON can carry
    side_effects: bool = False  # it changes something: a plan shows it before it runs
    triggers: str = ""  # a regex of words that make this tool worth offering (besides its name and description)
    own_words: bool = False  # its results are the user's own words (notes, to-dos): see Toolbox.readable

    def spec(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class Arg:
    """What the model is told about one argument: `Annotated[str, Arg("e.g. ...")]`."""

    description: str = ""
    enum: tuple = ()


_SCHEMA_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def _schema(hint: Any) -> dict[str, Any]:
    """The JSON schema of one argument's type hint: str, int, float, bool, list[str], dict,
    `X | None`, and `Annotated[X, Arg(...)]` for a description or an enum."""
    arg = Arg()
    if typing.get_origin(hint) is Annotated:
        hint, *extra = typing.get_args(hint)
        arg = next((e for e in extra if isinstance(e, Arg)), arg)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(h for h in typing.get_args(hint) if h is not type(None))
    origin = typing.get_origin(hint) or hint
    if origin not in _SCHEMA_TYPES:
        raise TypeError(f"a tool argument cannot be {hint!r}")
    out: dict[str, Any] = {"type": _SCHEMA_TYPES[origin]}
    if origin is list and typing.get_args(hint):
        out["items"] = _schema(typing.get_args(hint)[0])
    if arg.enum:
        out["enum"] = list(arg.enum)
    if arg.description:
        out["description"] = arg.description
    return out


def tool(
    fn: Callable[..., Any],
    description: str = "",
    *,
    name: str = "",
    side_effects: bool = False,
    triggers: str = "",
    own_words: bool = False,
) -> Tool:
    """A Tool from a function: its name (unless `name`), its docstring as the description
    (unless one is given), and its parameters from the signature (type hints as JSON
    schema; those without a default are required), so the schema cannot drift from the
    function. The hints are read in the function's module: the names in them must be
    defined there."""
    hints = typing.get_type_hints(fn, include_extras=True)
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    parameters: dict[str, Any] = {"type": "object", "properties": {p.name: _schema(hints[p.name]) for p in params}}
    required = [p.name for p in params if p.default is p.empty]
    if required:
        parameters["required"] = required
    text = description or " ".join((inspect.getdoc(fn) or "").split())
    if not text:
        raise TypeError(f"tool {fn.__name__} needs a description (a docstring)")
    return Tool(
        name or fn.__name__,
        text,
        parameters=parameters,
        fn=fn,
        side_effects=side_effects,
        triggers=triggers,
        own_words=own_words,
    )


# The user's message of the turn a tool runs in: their own words, which outrank the
# model's paraphrase of them (a reminder's time, say). Empty outside a chat turn.
user_message: contextvars.ContextVar[str] = contextvars.ContextVar("anima_user_message", default="")


@dataclass
class ToolContext:
    """What tools work on: one user's store, their settings, and a clock (tests move it)."""

    store: Any  # anima.store.Store
    config: Any  # anima.config.Config
    clock: Callable[[], datetime] = field(default_factory=lambda: lambda: datetime.now().astimezone())

    def now(self) -> datetime:
        return self.clock()


@dataclass
class ToolResult:
    name: str
    arguments: dict[str, Any]
    content: str  # what the model reads
    ok: bool = True
    data: Any = None  # the function's return value, for callers that want it

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments, "ok": self.ok, "content": self.content}


def check_arguments(schema: dict[str, Any], arguments: dict[str, Any]) -> None:
    """The subset of JSON Schema tools use: required keys, types, enums, no strangers."""
    props = schema.get("properties", {})
    missing = [k for k in schema.get("required", []) if k not in arguments]
    if missing:
        raise ToolError(f"missing argument(s): {', '.join(missing)}", f"give {', '.join(missing)}")
    unknown = [k for k in arguments if k not in props]
    if unknown and schema.get("additionalProperties", False) is False:
        raise ToolError(f"unknown argument(s): {', '.join(unknown)}", f"use only: {', '.join(props) or 'none'}")
    for key, value in arguments.items():
        spec = props.get(key, {})
        kind = spec.get("type")
        expected = _JSON_TYPES.get(kind) if isinstance(kind, str) else None
        if expected is not None and (
            not isinstance(value, expected) or (kind in ("integer", "number") and isinstance(value, bool))
        ):
            raise ToolError(
                f"argument '{key}' should be a {kind}, not {type(value).__name__}", f"pass {key} as a {kind}"
            )
        if "enum" in spec and value not in spec["enum"]:
            raise ToolError(f"argument '{key}' must be one of {spec['enum']}", f"got {value!r}")


_COMMON = frozenset(
    "a an and are as at be by can do for from get give how i in is it me my of on or please "
    "the this to what when with you your".split()
)


def _stems(text: str) -> set[str]:
    """Content words, cut to five letters ("reminders" and "remind" meet at "remin")."""
    return {w[:5] for w in re.findall(r"[a-z]{3,}", text.lower()) if w not in _COMMON}


def render(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


class Toolbox:
    def __init__(self, tools: Iterable[Tool] = (), timeout: float = 30.0):
        self.tools: dict[str, Tool] = {}
        self.timeout = timeout
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if tool.name in self.tools:
            raise ValueError(f"two tools are named {tool.name}")
        self.tools[tool.name] = tool

    def __contains__(self, name: str) -> bool:
        return name in self.tools

    def __len__(self) -> int:
        return len(self.tools)

    def specs(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        chosen = self.tools if names is None else {n: self.tools[n] for n in names if n in self.tools}
        return [t.spec() for t in chosen.values()]

    def select(self, text: str, k: int = 4) -> list[str]:
        """The tools worth offering for this message, best first (at most `k`; none for
        small talk). Every offered tool costs prompt tokens on every step, and a small
        model picks better from a few, so the model only sees the ones the message is
        about: its trigger words, or enough words shared with the tool's description."""
        words = _stems(text)
        scored = []
        for tool in self.tools.values():
            hit = 2.0 if tool.triggers and re.search(tool.triggers, text, re.IGNORECASE) else 0.0
            overlap = len(words & _stems(f"{tool.name.replace('_', ' ')} {tool.description}"))
            if hit or overlap >= 2:
                scored.append((hit + overlap, tool.name))
        return [name for _, name in sorted(scored, key=lambda s: -s[0])[:k]]

    def call(self, name: str, arguments: dict[str, Any] | str | None = None) -> ToolResult:
        """Run one call. Never raises for the tool's sake: a bad name, bad arguments, an
        error inside the tool or a timeout come back as a failed result saying so."""
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except json.JSONDecodeError:
                return ToolResult(name, {}, f"error: the arguments are not JSON: {arguments[:80]!r}", ok=False)
        arguments = arguments or {}
        tool = self.tools.get(name)
        if tool is None:
            return ToolResult(
                name, arguments, f"error: no tool named '{name}'; available: {', '.join(self.tools)}", ok=False
            )
        if not isinstance(arguments, dict):
            return ToolResult(name, {}, "error: the arguments must be a JSON object", ok=False)
        try:
            check_arguments(tool.parameters, arguments)
            value = self._run(tool, arguments)
        except AnimaError as exc:
            return ToolResult(name, arguments, f"error: {exc}", ok=False)
        except TimeoutError:
            return ToolResult(name, arguments, f"error: {name} did not finish in {self.timeout:g} s", ok=False)
        except Exception as exc:  # a tool's bug must not end the turn
            log.exception("tool %s failed", name)
            return ToolResult(name, arguments, f"error: {name} failed: {type(exc).__name__}: {exc}", ok=False)
        return ToolResult(name, arguments, render(value), data=value)

    def readable(self, name: str, content: str, injection: Any = None) -> str:
        """A result as the model may read it: instructions hidden in it removed
        (`anima.safety.injection`). From the user's own words (notes, to-dos, goals),
        which are requests by nature, only the rules' phrasings go: the learned head,
        trained to spot requests inside data, would strip "Call the plumber"."""
        if injection is None:
            return content
        tool = self.tools.get(name)
        return injection.neutralise(content, learned_too=not (tool is not None and tool.own_words))[0]

    def _run(self, tool: Tool, arguments: dict[str, Any]) -> Any:
        future = in_thread(f"tool-{tool.name}", tool.fn, **arguments)  # the tool sees user_message
        try:
            return future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError as exc:
            raise TimeoutError from exc


def in_thread(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future:
    """`fn(*args, **kwargs)` on a thread of its own, in a copy of the caller's context.
    Wait on the future with a timeout: one that overruns is abandoned, not killed
    (Python cannot kill a thread)."""
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
    future = pool.submit(contextvars.copy_context().run, fn, *args, **kwargs)
    pool.shutdown(wait=False)
    return future
