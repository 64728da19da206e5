"""Tool calls in what a model writes: the one place that reads them.

Local models (the Qwen/Hermes chat templates) write `<tool_call>{"name": ..., "arguments":
{...}}</tool_call>`; small ones often write the same object in a ```json fence, or bare.
`split_tool_calls` takes them out of a finished reply; while a reply streams,
`call_start` finds where one begins and `partial_open` how much of the end could still
become one (held back from the user until it is clear); `split_calls` reads calls written
freely by a backend that cannot prefill.
"""

from __future__ import annotations

import json
import re
from typing import Any

CALL_OPEN = "<tool_call>"  # how Qwen/Hermes templates have the model start a tool call
# ...and how small models often write one anyway: a JSON fence naming a tool
_FENCED_CALL = re.compile(r'```(?:json)?\s*\{\s*"name"\s*:\s*"([^"]*)"|^\s*\{\s*"name"\s*:\s*"([^"]*)"')
_FENCE_START = re.compile(
    r'`{1,3}(?:j|js|jso|json)?\s*(?:\{\s*(?:"(?:n|na|nam|name|name")?\s*(?::\s*(?:"[\w-]*)?)?)?)?'
)

_TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)
_FENCED = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


def split_tool_calls(text: str, names: set[str] | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Tool calls in a reply, written as the Qwen/Hermes chat templates ask:
    `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`. Small models sometimes
    write the same object in a ```json fence instead; that counts too when its name is
    one of the offered tools (`names`). Returns the remaining text and the calls
    ({"name", "arguments"}); a block that is not such a call stays text."""
    calls = []

    def take(match: re.Match, need_known: bool) -> str:
        try:
            call = json.loads(match.group(1), strict=False)
        except ValueError:
            return match.group(0)
        if (
            not isinstance(call, dict)
            or not isinstance(call.get("name"), str)
            or (need_known and call["name"] not in (names or ()))
        ):
            return match.group(0)
        calls.append({"name": call["name"], "arguments": call.get("arguments") or {}})
        return ""

    rest = _TOOL_CALL.sub(lambda m: take(m, False), text)
    if not calls and names:
        rest = _FENCED.sub(lambda m: take(m, True), rest)
    return rest.strip(), calls


def call_start(text: str, offered: list[str]) -> tuple[int, str]:
    """Where a tool call starts in `text` (-1 if none yet) and the opening to prefill
    the constrained call after."""
    at = text.find(CALL_OPEN)
    if at >= 0:
        return at, CALL_OPEN + "\n"
    fenced = _FENCED_CALL.search(text)
    if fenced and (fenced.group(1) or fenced.group(2)) in offered:
        return fenced.start(), "```json\n" if fenced.group(1) else ""
    return -1, ""


def partial_open(text: str) -> int:
    """How many characters at the end of `text` could still become a tool call's
    opening: held back from the user until it is clear."""
    for n in range(min(len(CALL_OPEN) - 1, len(text)), 0, -1):
        if CALL_OPEN.startswith(text[-n:]):
            return n
    fence = text.rfind("`", 0, len(text)) if "`" in text[-60:] else -1
    while fence > 0 and text[fence - 1] == "`":
        fence -= 1
    if fence >= 0 and _FENCE_START.fullmatch(text[fence:]):
        return len(text) - fence
    if _FENCE_START.fullmatch("```" + text.lstrip()):  # a bare JSON call, at the very start
        return len(text)
    return 0


def split_calls(text: str, offered: list[str]) -> list[dict[str, Any] | None]:
    """Calls written freely (backends that cannot prefill); None for one that does not parse."""
    _, calls = split_tool_calls(text, set(offered))
    if not calls:  # a bare JSON object
        try:
            call = json.loads(text.strip().removeprefix("```json").removesuffix("```"), strict=False)
        except ValueError:
            call = None
        if isinstance(call, dict) and call.get("name") in offered:
            calls = [{"name": call["name"], "arguments": call.get("arguments") or {}}]
    return calls or [None]
