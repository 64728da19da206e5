"""Tool calls: the one place that reads them from what a model writes, and the loop
that runs them (`ToolLoop`).

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
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Iterator

from anima.models.base import Chunk, Message, Options
from anima.tools import ToolResult, user_message

if TYPE_CHECKING:
    from anima.models.base import ChatModel
    from anima.tools import Toolbox

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


class ToolLoop:
    """A reply with anima's tools on offer. The text streams as it comes; when the model
    opens a tool call, the call itself is generated under a grammar built from the tools'
    schemas (on backends that can prefill; others write it freely and it is parsed), run,
    and its result goes back as data for the next step (instructions hidden in it removed
    by `injection`, the guard's injection check). After `max_steps` calls it must answer.
    `results`: the calls it made, in order.

        loop = ToolLoop(model, toolbox, options, ["add_note", "search_notes"], max_steps=3, user_text=text)
        for chunk in loop.stream(messages): ...
    """

    def __init__(
        self,
        model: ChatModel,
        toolbox: Toolbox,
        options: Options,
        tools: list[str],
        max_steps: int,
        user_text: str,
        injection: Any = None,
    ):
        self.model, self.toolbox, self.options, self.tools = model, toolbox, options, tools
        self.max_steps, self.user_text, self.injection = max_steps, user_text, injection
        self.results: list[ToolResult] = []

    def stream(self, messages: list[Message]) -> Iterator[Chunk]:
        """The model's reply to `messages`: text streams as it comes; a tool call is taken
        out, run, and its result goes back as data for the next step."""
        model, box = self.model, self.toolbox
        messages, steps, answer_now = list(messages), self.max_steps, False
        for step in range(steps + 1):
            offered = [] if answer_now or step == steps else self.tools
            if not offered and step:  # small models echo the last call; say plainly what is wanted now
                messages.append(
                    {
                        "role": "user",
                        "content": (
                            "(The tool calls above have been carried out. Now answer my message in plain words, "
                            "using their results. No more tool calls.)"
                        ),
                    }
                )
            options = replace(self.options, tools=box.specs(offered)) if offered else self.options
            held, before, calls = "", "", None
            stream = model.stream(messages, options)
            try:
                for chunk in stream:
                    if not offered:
                        yield chunk
                        continue
                    held += chunk.text
                    at, opener = call_start(held, offered)
                    if at < 0:
                        keep = partial_open(held)
                        if len(held) > keep:
                            before += held[: len(held) - keep]
                            yield Chunk(held[: len(held) - keep])
                            held = held[len(held) - keep :]
                        if chunk.finish_reason is not None:
                            if held:
                                yield Chunk(held)
                            yield Chunk("", chunk.finish_reason, chunk.usage)
                            return
                        continue
                    if held[:at]:
                        before += held[:at]
                        yield Chunk(held[:at])
                    if model.capabilities.prefill:
                        stream.close()
                        calls = [self._constrained_call(messages, before + opener, offered)]
                    else:
                        rest = held[at:] + "".join(c.text for c in stream)
                        calls = split_calls(rest, offered)
                    break
            finally:
                stream.close()
            if calls is None:  # the stream ended without a finish reason
                return
            done = {json.dumps([r.name, r.arguments], sort_keys=True) for r in self.results}
            calls = [c for c in calls if c is not None]
            fresh = [c for c in calls if json.dumps([c["name"], c.get("arguments") or {}], sort_keys=True) not in done]
            answer_now = bool(calls) and not fresh  # the same call again: it has its answer
            if fresh or not calls:
                messages += self._run_calls(before, fresh)

    def _constrained_call(self, messages: list[Message], before: str, offered: list[str]) -> dict[str, Any] | None:
        box = self.toolbox
        schema = {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {"name": {"const": name}, "arguments": box.tools[name].parameters},
                    "required": ["name", "arguments"],
                }
                for name in offered
            ]
        }
        options = replace(
            self.options, tools=box.specs(offered), json_schema=schema, prefix=before, temperature=0.0, max_tokens=300
        )
        text = "".join(c.text for c in self.model.stream(messages, options))
        try:
            call = json.loads(text, strict=False)
        except ValueError:
            return None
        return call if isinstance(call, dict) and isinstance(call.get("name"), str) else None

    def _run_calls(self, before: str, calls: list[dict[str, Any]]) -> list[Message]:
        """Run the calls; the messages that tell the model what it asked and got back.
        Results are data: instructions hidden in them are removed first."""
        box = self.toolbox
        if not calls:
            return [
                {"role": "assistant", "content": before},
                {"role": "user", "content": "(That tool call was not valid JSON. Answer without tools.)"},
            ]
        said = {"role": "assistant", "content": before, "tool_calls": []}
        results = []
        for call in calls:
            token = user_message.set(self.user_text)
            try:
                result = box.call(call["name"], call.get("arguments") or {})
            finally:
                user_message.reset(token)
            self.results.append(result)
            content = box.readable(result.name, result.content, self.injection)
            ident = f"call_{uuid.uuid4().hex[:12]}"
            said["tool_calls"].append(
                {"id": ident, "type": "function", "function": {"name": result.name, "arguments": result.arguments}}
            )
            results.append({"role": "tool", "tool_call_id": ident, "name": result.name, "content": content})
        return [said, *results]
