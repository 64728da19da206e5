"""Scripted models for offline tests: no weights, no network, same interfaces."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Callable, Iterator

from anima.models.base import Capabilities, Chunk, Message, Options, Usage

Reply = str | Exception | Callable[[list[Message]], str]


class FakeChatModel:
    """Replies from `script` in order, then echoes the last user message.

    A script item is a string, an exception to raise, or a function of the messages.
    With `options.json_schema` and no script left it returns `{}`. Every call is kept
    in `.calls` as `(messages, options)`.
    """

    def __init__(
        self, script: list[Reply] | None = None, name: str = "fake", capabilities: Capabilities = Capabilities()
    ):
        """`capabilities`: what it stands in for (e.g. `Capabilities(remote=url)`, a remote server)."""
        self.name = name
        self.capabilities = capabilities
        self.script = list(script or [])
        self.calls: list[tuple[list[Message], Options]] = []

    def enqueue(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def stream(self, messages: list[Message], options: Options) -> Iterator[Chunk]:
        self.calls.append((messages, options))
        reply = self.script.pop(0) if self.script else self._default(messages, options)
        if isinstance(reply, Exception):
            raise reply
        text = reply(messages) if callable(reply) else reply
        pieces = re.findall(r"\S+\s*|\s+", text) or [""]
        finish = "stop"
        if len(pieces) > options.max_tokens:
            pieces, finish = pieces[: options.max_tokens], "length"
        prompt_tokens = sum(self.count_tokens(m["content"]) for m in messages)
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            yield Chunk(piece, finish if last else None, Usage(prompt_tokens, len(pieces)) if last else None)

    @staticmethod
    def _default(messages: list[Message], options: Options) -> str:
        if options.json_schema is not None:
            return json.dumps({})
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        return f"You said: {user}"

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class FakeEmbedder:
    """Deterministic bag-of-hashed-words vectors: texts sharing words are close."""

    def __init__(self, dim: int = 384, name: str = "fake-embed"):
        self.name, self.dim = name, dim

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [self._one(t) for t in texts]

    def _one(self, text: str) -> list[float]:
        vec = [0.0] * self.dim
        for word in re.findall(r"\w+", text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            vec[h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]
