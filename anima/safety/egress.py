"""Egress policy: what may leave this machine, redacted, and logged.

A model server on loopback or a private network is local. Anything else is remote:
anima refuses to use it unless `privacy.remote = true`, and then every message is
redacted (emails, phones, cards, addresses, the people anima knows, ...) before it is
sent, the placeholders the model echoes are put back in its reply, and each request is
logged in the user's store (destination, size, what was redacted: counts, never values).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Callable, Iterator
from urllib.parse import urlparse

from anima.errors import ConfigError
from anima.models.base import ChatModel, Chunk, Message, Options
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


def check_allowed(base_url: str, remote_allowed: bool) -> None:
    if not remote_allowed and not is_local(base_url):
        host = urlparse(base_url).hostname
        raise ConfigError(
            f"openai_http.base_url points outside this machine ({host}) and privacy.remote is off",
            "set privacy.remote = true to allow it (personal data is redacted before sending)",
        )


class RedactingModel:
    """Wraps a remote chat model: redacts on the way out, restores on the way in."""

    def __init__(self, model: ChatModel, destination: str, names: Callable[[], list[str]] = list, log: Callable[[str, int, dict[str, int]], None] | None = None):
        self.model, self.destination, self.names, self.log = model, destination, names, log
        self.name = model.name

    def redact(self, messages: list[Message]) -> tuple[list[Message], dict[str, str], dict[str, int]]:
        """The messages with personal data replaced; one numbering across all of them."""
        names = self.names()
        mapping: dict[str, str] = {}
        counts: dict[str, int] = {}
        out = []
        for m in messages:
            r = pii.redact(m.get("content") or "", names, mapping)
            out.append({**m, "content": r.text})
            for kind, n in r.counts().items():
                counts[kind] = counts.get(kind, 0) + n
        return out, mapping, counts

    def stream(self, messages: list[Message], options: Options) -> Iterator[Chunk]:
        safe, mapping, counts = self.redact(messages)
        if self.log is not None:
            self.log(self.destination, sum(len(m.get("content") or "") for m in safe), counts)
        pending = ""
        for chunk in self.model.stream(safe, options):
            pending += chunk.text
            cut = pending.rfind("[")
            if cut != -1 and "]" not in pending[cut:] and len(pending) - cut < 24:
                ready, pending = pending[:cut], pending[cut:]  # a placeholder may be split
            else:
                ready, pending = pending, ""
            if ready or chunk.finish_reason:
                text = pii.restore(ready + (pending if chunk.finish_reason else ""), mapping)
                if chunk.finish_reason:
                    pending = ""
                yield Chunk(text, chunk.finish_reason, chunk.usage)

    def count_tokens(self, text: str) -> int:
        return self.model.count_tokens(text)

    @property
    def n_ctx(self) -> int:
        return getattr(self.model, "n_ctx", 0)
