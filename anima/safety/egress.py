"""Egress policy: what may leave this machine, redacted, and logged.

A model server on loopback or a private network is local. Anything else is remote:
anima refuses to use it unless `privacy.remote = true`, and then every message is
redacted (emails, phones, cards, addresses, the people anima knows, ...) before it is
sent, the placeholders the model echoes are put back in its reply, and each request is
logged in the user's store (destination, size, what was redacted: counts, never values).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from dataclasses import replace
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

from anima.errors import ConfigError
from anima.models.base import Capabilities, ChatModel, Chunk, Message, Options
from anima.safety import pii


def is_local(base_url: str) -> bool:
    host = urlparse(base_url).hostname or ""
    if host in ("localhost", "") or host.endswith(".local"):
        return True
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            addresses = {ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(host, None)}
        except OSError:
            return False  # unknown: treat as remote
    return all(a.is_loopback or a.is_private or a.is_link_local for a in addresses)


_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


def _leaves(value: Any, fn: Callable[[str], str]) -> Any:
    """`value` with `fn` applied to every string in it (dicts, lists, JSON-shaped data)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _leaves(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_leaves(v, fn) for v in value]
    return value


def _held_from(text: str) -> int:
    """Where to stop releasing a reply: at a tool call not yet closed, or at a
    placeholder that may still be split across chunks."""
    opened = text.rfind("<tool_call>")
    if opened > text.rfind("</tool_call>"):
        return opened
    for n in range(len("<tool_call>") - 1, 0, -1):  # "...<tool_c" may be a call beginning
        if text.endswith("<tool_call>"[:n]):
            return len(text) - n
    cut = text.rfind("[")
    return cut if cut != -1 and "]" not in text[cut:] and len(text) - cut < 24 else len(text)


def _restore(text: str, mapping: dict[str, str]) -> str:
    """Originals back in a reply. Inside a tool call they go back into the parsed JSON,
    so a name with a quote in it cannot break the call or add arguments to it."""
    out, pos = [], 0
    for match in _TOOL_CALL.finditer(text):
        out.append(pii.restore(text[pos : match.start()], mapping))
        try:
            call = _leaves(json.loads(match.group(1), strict=False), lambda s: pii.restore(s, mapping))
            out.append(f"<tool_call>{json.dumps(call, ensure_ascii=False)}</tool_call>")
        except ValueError:
            out.append(pii.restore(match.group(0), mapping))
        pos = match.end()
    out.append(pii.restore(text[pos:], mapping))
    return "".join(out)


def check_allowed(base_url: str, remote_allowed: bool) -> None:
    if not remote_allowed and not is_local(base_url):
        host = urlparse(base_url).hostname
        raise ConfigError(
            f"openai_http.base_url points outside this machine ({host}) and privacy.remote is off",
            "set privacy.remote = true to allow it (personal data is redacted before sending)",
        )


class RedactingModel:
    """Wraps a remote chat model: redacts on the way out, restores on the way in.

    Everything the model is sent is redacted with one numbering: message text, the
    arguments of earlier tool calls, and the tool definitions (an MCP server's tool may
    describe the user's own things). Tool calls the model writes get the originals back
    before any tool runs."""

    def __init__(
        self,
        model: ChatModel,
        destination: str,
        names: Callable[[], list[str]] = list,
        log: Callable[[str, int, dict[str, int]], None] | None = None,
    ):
        self.model, self.destination, self.names, self.log = model, destination, names, log
        self.name = model.name

    def redact(
        self, messages: list[Message], tools: list[dict] | None = None
    ) -> tuple[list[Message], list[dict] | None, dict[str, str], dict[str, int]]:
        """The messages and tools with personal data replaced; one numbering across all of them."""
        names = self.names()
        mapping: dict[str, str] = {}
        counts: dict[str, int] = {}

        def clean(text: str) -> str:
            r = pii.redact(text, names, mapping)
            for kind, n in r.counts().items():
                counts[kind] = counts.get(kind, 0) + n
            return r.text

        def arguments(text: str) -> str:  # JSON in a string: escapes ("Jos\\u00e9") would hide names
            try:
                return json.dumps(_leaves(json.loads(text, strict=False), clean), ensure_ascii=False)
            except ValueError:
                return clean(text)

        def call(c: dict) -> dict:
            fn = c.get("function") or {}
            args = fn.get("arguments")
            return {
                **c,
                "function": {**fn, "arguments": arguments(args) if isinstance(args, str) else _leaves(args, clean)},
            }

        out = [
            {
                **_leaves({k: v for k, v in m.items() if k != "tool_calls"}, clean),
                **({"tool_calls": [call(c) for c in m["tool_calls"]]} if m.get("tool_calls") else {}),
            }
            for m in messages
        ]
        return out, _leaves(tools, clean), mapping, counts

    def stream(self, messages: list[Message], options: Options) -> Iterator[Chunk]:
        safe, tools, mapping, counts = self.redact(messages, options.tools)
        if self.log is not None:
            self.log(
                self.destination,
                len(json.dumps(safe, ensure_ascii=False)) + len(json.dumps(tools or [], ensure_ascii=False)),
                counts,
            )
        pending = ""
        for chunk in self.model.stream(safe, replace(options, tools=tools)):
            pending += chunk.text
            cut = _held_from(pending)
            ready, pending = pending[:cut], pending[cut:]
            if ready or chunk.finish_reason:
                text = _restore(ready + (pending if chunk.finish_reason else ""), mapping)
                if chunk.finish_reason:
                    pending = ""
                yield Chunk(text, chunk.finish_reason, chunk.usage)

    def count_tokens(self, text: str) -> int:
        return self.model.count_tokens(text)

    @property
    def capabilities(self) -> Capabilities:
        """The wrapped model's, without logits: they would be read unredacted."""
        return replace(self.model.capabilities, logits=False)
