"""The two model interfaces: `ChatModel` and `Embedder`.

A chat backend implements one method, `stream(messages, options) -> Iterator[Chunk]`,
and declares what else it can do in `capabilities`; everything above it (joining text,
JSON parsing, timing, logging) lives once, here and in `anima.assistant`. Privacy rules
read `capabilities.remote`, never the backend's name, so a new backend cannot skip them.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

Message = dict[str, Any]  # {"role": "system" | "user" | "assistant" | "tool", "content": "...", maybe "tool_calls"}


@dataclass
class Options:
    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    json_schema: dict[str, Any] | None = None  # constrain the reply to this JSON schema
    tools: list[dict[str, Any]] | None = None  # OpenAI-style tool definitions the model may call
    prefix: str = (
        ""  # the reply starts with this text (backends whose capabilities say prefill); only what follows is returned
    )
    # greedy replies that copy from their prompt (learning's memories): the backend may guess
    # the next tokens from the prompt and check several at once; the same reply, sooner
    lookup: bool = False


@dataclass(frozen=True)
class Capabilities:
    """What a chat backend can do besides `stream`, declared by the backend."""

    remote: str = (
        ""  # where what it is sent goes when that is off this machine's network (a URL); "" when it stays here
    )
    prefill: bool = False  # honours Options.prefix
    logits: bool = False  # has first_token_logits(messages, words) -> {word: logit}
    n_ctx: int = 0  # context window in tokens; 0 when unknown
    parallel: int = 1  # greedy replies it decodes together (`complete_all`); 1: one after another


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Chunk:
    text: str
    finish_reason: str | None = None  # set on the last chunk: "stop" | "length"
    usage: Usage | None = None  # set on the last chunk when the backend knows it


@runtime_checkable
class ChatModel(Protocol):
    name: str
    capabilities: Capabilities

    def stream(self, messages: list[Message], options: Options) -> Iterator[Chunk]: ...

    def count_tokens(self, text: str) -> int: ...


@runtime_checkable
class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> list[list[float]]: ...


@dataclass
class Completion:
    text: str
    model: str
    usage: Usage
    finish_reason: str | None
    latency_ms: float
    first_token_ms: float | None

    def json(self) -> Any:
        """The reply parsed as JSON; lenient about raw control characters in strings,
        which llama.cpp's schema grammar lets through."""
        return json.loads(self.text, strict=False)


class Preempted(Exception):
    """A background generation gave the model up to a request (see `giving_way`)."""


_background = threading.local()


@contextmanager
def giving_way(wanted: Callable[[], bool]):
    """Generations on this thread stop once `wanted()` says the model is needed
    elsewhere (a request came in), raising `Preempted`: the embedded model inside
    llama.cpp's computation (milliseconds), others at the next token. Background work
    (the learner) delays a request by less than a decode step, never by a generation."""
    before = getattr(_background, "wanted", None)
    _background.wanted = wanted
    try:
        yield
    finally:
        _background.wanted = before


class OtherWork:
    """Work of this process outside a model's decode that wants a core now (embedding a
    query or a message for recall and the guard's fast layer). A local decode runs on
    every core while there is none and leaves it one while there is: on 2 cores, llama.cpp
    threads that must wait for a descheduled partner at every step slow both down."""

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            self.n += 1
        try:
            yield
        finally:
            with self._lock:
                self.n -= 1


OTHER_WORK = OtherWork()


def wanted_elsewhere() -> Callable[[], bool] | None:
    """Inside `giving_way` on this thread: the check whether a request wants the model."""
    return getattr(_background, "wanted", None)


def complete(
    model: ChatModel,
    messages: list[Message],
    options: Options | None = None,
    until: Callable[[str], bool] | None = None,
) -> Completion:
    """Run `model.stream` to the end, or until `until(the text so far)`, and join the pieces."""
    start = time.perf_counter()
    parts: list[str] = []
    first = None
    last = Chunk("")
    wanted = wanted_elsewhere()
    stream = model.stream(messages, options or Options())
    try:
        for chunk in stream:
            if wanted is not None and wanted():
                raise Preempted(f"{model.name} was wanted for a request")
            if first is None and chunk.text:
                first = (time.perf_counter() - start) * 1000
            parts.append(chunk.text)
            last = chunk
            if until is not None and chunk.text and until("".join(parts)):
                last = Chunk("", "stop")
                break
    finally:
        if hasattr(stream, "close"):  # a backend's decode stops at its next token
            stream.close()
    text = "".join(parts)
    usage = last.usage or Usage(completion_tokens=model.count_tokens(text))
    return Completion(
        text,
        model.name,
        usage=usage,
        finish_reason=last.finish_reason,
        latency_ms=(time.perf_counter() - start) * 1000,
        first_token_ms=first,
    )


def complete_all(
    model: ChatModel,
    prompts: list[tuple[list[Message], Options]],
    until: Callable[[str], bool] | None = None,
) -> list[Completion]:
    """`complete` for each (messages, options), in order. Greedy replies (temperature 0,
    no schema, no tools) go to a backend's `complete_together` when it has one (`parallel`
    > 1): the embedded model decodes them together in a context of their own, which keeps
    their shared prefix read and leaves the chat's KV cache alone. Each reply is the one
    `complete` gives, up to rounding."""
    together = getattr(model, "complete_together", None)
    if (
        together is not None
        and model.capabilities.parallel > 1
        and all(o.temperature == 0 and o.json_schema is None and not o.tools and not o.prefix for _, o in prompts)
    ):
        return together(prompts, until)
    return [complete(model, messages, options, until) for messages, options in prompts]


def merge_system(messages: list[Message]) -> list[Message]:
    """Every system message folded into the first, for chat templates that allow only
    one, at the start (Gemma, Mistral)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system" and m.get("content"))
    rest = [m for m in messages if m["role"] != "system"]
    return ([{"role": "system", "content": system}] if system else []) + rest
