"""The HTTP server: an OpenAI-compatible API in front of the full anima turn.

    create_app(server) -> FastAPI

One chat model and one embedder are shared; every user has their own encrypted store,
memory and conversation log, picked by the API key (`Authorization: Bearer ...`).
Generations queue in front of the model (a llama.cpp context serves one at a time);
past `max_waiting`, a request gets 429 at once instead of waiting forever.
Errors are OpenAI-shaped JSON: {"error": {"message", "type", "code", "param"}}.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from anima import __version__
from anima.app import Container, build
from anima.assistant import personas
from anima.config import USER_NAME, Config
from anima.errors import AnimaError, BadInput, ContextTooLong, ModelNotFound, ModelUnavailable, NotFound
from anima.models import ChatModel, Embedder
from anima.safety.guard import Guard
from anima.server import web
from anima.server.inbox import inbox_router
from anima.store.accounts import Accounts
from anima.tools.calls import split_tool_calls

log = logging.getLogger("anima.server")


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


def _error(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": type_, "code": code, "param": param}},
        status_code=status,
        headers=headers,
    )


def row_id():
    return PathParam(ge=1, le=2**63 - 1, description="An id from a listing.")  # SQLite's integer range


# AnimaError subclasses -> HTTP status; a bug in anima is a 500 with an id, never a traceback.
STATUS = {NotFound: 404, BadInput: 400, ContextTooLong: 400, ModelNotFound: 404, ModelUnavailable: 503}


@dataclass
class Server:
    config: Config
    accounts: Accounts
    chat_model: ChatModel
    embedder: Embedder
    learner_model: ChatModel | None = None
    max_waiting: int = 8  # requests allowed to wait for the model; more get 429
    max_body: int = 1_000_000  # bytes
    data_dir: Path | None = None  # where users' stores live; default: the configured data dir
    quiet_s: float = 2.0  # learning starts only after this long without requests
    guard: Guard | None = None  # shared by all users; None builds one per user from the config
    _slots: threading.Semaphore = field(init=False)
    _users: dict[str, Container] = field(default_factory=dict)
    _users_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self._slots = threading.Semaphore(1 + self.max_waiting)
        self._active = 0  # requests admitted and not finished
        self._last_busy = 0.0
        self._busy_since = 0.0  # when the requests in flight began to be (monotonic)

    def stop_learning(self) -> None:
        for container in self._users.values():
            if container.assistant.learner is not None:
                container.assistant.learner.stop()

    def stats(self) -> dict[str, Any]:
        """Counts for monitoring (no user's data): the prompt cache, background learning."""
        learners = [c.assistant.learner for c in list(self._users.values()) if c.assistant.learner is not None]
        found: dict[str, Any] = {
            "learning": {
                "done": sum(lr.done for lr in learners),
                "queued": sum(lr.pending() for lr in learners),
                "failed": sum(len(lr.errors) for lr in learners),
                "gave_way": sum(lr.preempted for lr in learners),
                "gave_way_ms_max": max(
                    (round(lr.gave_way_ms_max, 1) for lr in learners if lr.gave_way_ms_max is not None), default=None
                ),
            }
        }
        if (cache := getattr(self.chat_model, "cache", None)) is not None:
            found["prompt_cache"] = {"hits": cache.hits, "misses": cache.misses, "read_tokens": cache.read}
        return found

    def in_flight(self) -> int:
        return self._active

    def busy_since(self) -> float | None:
        """When the requests now in flight began to be (monotonic); None when there are none."""
        return self._busy_since if self._active else None

    def idle(self) -> bool:
        """No request in flight for `quiet_s`: back-to-back requests leave no gap to learn in."""
        return self._active == 0 and time.monotonic() - self._last_busy >= self.quiet_s

    def container(self, user: str) -> Container:
        """The user's own store, memory and assistant (made on first use, then kept)."""
        with self._users_lock:
            if user not in self._users:
                config = self.config.model_copy(update={"user": user})
                container = build(
                    config,
                    chat_model=self.chat_model,
                    embedder=self.embedder,
                    learner_model=self.learner_model,
                    data_dir=self.data_dir,
                    guard=self.guard,
                )
                if container.assistant.learner is not None:
                    container.assistant.learner.idle = self.idle  # learn between requests, never in front of one
                    container.assistant.learner.busy = self.in_flight
                    container.assistant.learner.busy_since = self.busy_since
                self._users[user] = container
            return self._users[user]

    def admit(self) -> None:
        if not self._slots.acquire(blocking=False):
            raise ApiError(
                429,
                f"the model is busy ({self.max_waiting} requests already waiting); retry shortly",
                "rate_limit_error",
                "queue_full",
            )
        with self._users_lock:
            if self._active == 0:
                self._busy_since = time.monotonic()
            self._active += 1

    def release(self) -> None:
        with self._users_lock:
            self._active -= 1
            self._last_busy = time.monotonic()
        self._slots.release()


# --- request shapes ------------------------------------------------------------------


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return "".join(p.get("text", "") for p in self.content if p.get("type") in ("text", "input_text"))
        return self.content or ""


class AnimaOptions(BaseModel):
    conversation: int | None = Field(
        None,
        ge=1,
        le=2**63 - 1,
        description="Continue this stored conversation: `anima.conversation` of an earlier reply.",
    )
    show_prompt: bool = Field(
        False,
        description="Return the exact messages the model was given (persona, recalled memories, the clock) "
        "as `anima.prompt`.",
    )


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI parameters are accepted and ignored
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768)
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    response_format: dict[str, Any] | None = None
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    anima: AnimaOptions | None = None  # anima's own options; OpenAI clients leave it out


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = ""
    input: str | list[str] = Field(min_length=1)


# --- the app ---------------------------------------------------------------------------


def create_app(server: Server) -> FastAPI:
    app = FastAPI(
        title="anima",
        version=__version__,
        description="A local-first personal assistant with memory, behind the OpenAI API.",
    )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        headers = {"Retry-After": "2"} if exc.status == 429 else None  # a generation takes seconds
        return _error(exc.status, exc.message, type_=exc.type, code=exc.code, param=exc.param, headers=headers)

    @app.exception_handler(AnimaError)
    async def _anima_error(request: Request, exc: AnimaError):
        status = next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)
        return _error(status, str(exc), "invalid_request_error" if status < 500 else "server_error", exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(
            400,
            f"{where}: {first.get('msg')}" if where else str(first.get("msg")),
            "invalid_request_error",
            "invalid_value",
            where or None,
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail), "invalid_request_error", None)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        ref = uuid.uuid4().hex[:8]
        log.error("internal error %s", ref, exc_info=exc)
        return _error(500, f"internal error (id {ref})", "server_error", "internal_error")

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > server.max_body):
            return _error(
                413, f"request body larger than {server.max_body} bytes", "invalid_request_error", "body_too_large"
            )
        return await call_next(request)

    def user(request: Request) -> str:
        """Who is asking: the owner of the Bearer key. With no accounts at all (a single
        user on loopback), the configured local user; revoked keys still count as accounts."""
        if not server.accounts.any_made():
            return server.config.user
        auth = request.headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        name = server.accounts.user_for(key) if key else None
        if name is None:
            raise ApiError(
                401,
                "missing or invalid API key; send `Authorization: Bearer <key>` (`anima users add NAME` makes one)",
                "authentication_error",
                "invalid_api_key",
            )
        return name

    @app.get("/api/health")
    def health() -> dict:
        return {
            "status": "ok",
            "version": __version__,
            "model": server.chat_model.name,
            "embedder": server.embedder.name,
            **server.stats(),
        }

    @app.get("/v1/models")
    def models(who: str = Depends(user)) -> dict:
        now = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": now, "owned_by": "anima", "description": p.description}
                for name, p in sorted(personas().items())
            ],
        }

    @app.post("/v1/embeddings")
    def embeddings(body: EmbeddingRequest, who: str = Depends(user)) -> dict:
        texts = [body.input] if isinstance(body.input, str) else body.input
        vectors = server.embedder.embed(texts)
        return {
            "object": "list",
            "model": server.embedder.name,
            "data": [
                {"object": "embedding", "index": i, "embedding": list(map(float, v))} for i, v in enumerate(vectors)
            ],
            "usage": {
                "prompt_tokens": sum(len(t.split()) for t in texts),
                "total_tokens": sum(len(t.split()) for t in texts),
            },
        }

    @app.post("/v1/chat/completions", response_model=None)
    def chat_completions(body: ChatRequest, who: str = Depends(user)):
        if body.user and not server.accounts.any_made():
            # no keys (one trusted machine, loopback): the request's `user` picks whose data
            if not re.match(USER_NAME, body.user):
                raise ApiError(
                    400, f"'{body.user}' is not a valid user name", "invalid_request_error", "invalid_value", "user"
                )
            who = body.user
        if body.model not in personas():
            raise ApiError(
                404,
                f"model '{body.model}' does not exist; GET /v1/models lists the personas",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        # The turn is the last user message; what follows it (the model's tool calls and
        # their results) is the tail of a tool loop the client is running.
        at = max((i for i, m in enumerate(body.messages) if m.role == "user"), default=None)
        tail = body.messages[at + 1 :] if at is not None else []
        if (
            at is None
            or not body.messages[at].text().strip()
            or any(m.role not in ("assistant", "tool") for m in tail)
            or (tail and tail[-1].role != "tool")
        ):
            raise ApiError(
                400,
                "the last message must be a non-empty user message, or tool results after one",
                "invalid_request_error",
                "invalid_value",
                "messages",
            )
        earlier, last = body.messages[:at], body.messages[at]
        instructions = "\n\n".join(m.text() for m in earlier if m.role in ("system", "developer"))
        history = [_message(m) for m in earlier if m.role in ("user", "assistant", "tool")]
        tools = body.tools if body.tools and body.tool_choice != "none" else None
        assistant = server.container(who).assistant
        conversation = body.anima.conversation if body.anima else None
        if conversation is not None and not assistant.store.turns(conversation, 1):
            raise ApiError(
                404, f"no conversation {conversation}", "invalid_request_error", "not_found", "anima.conversation"
            )
        overrides = {
            "max_tokens": body.max_completion_tokens or body.max_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "seed": body.seed,
            "stop": [body.stop] if isinstance(body.stop, str) else body.stop,
            "json_schema": _schema(body.response_format),
            "tools": tools,
        }
        options = assistant.options(**{k: v for k, v in overrides.items() if v is not None})
        server.admit()
        try:
            reply = assistant.reply(
                last.text(),
                conversation_id=conversation,
                persona=body.model,
                options=options,
                history=history,
                instructions=instructions,
                tail=[_message(m) for m in tail],
            )
        except BaseException:
            server.release()
            raise
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        show = bool(body.anima and body.anima.show_prompt)
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(
                _sse(
                    server,
                    reply,
                    ident=ident,
                    created=created,
                    model=body.model,
                    include_usage=usage,
                    tools=tools,
                    show_prompt=show,
                ),
                media_type="text/event-stream",
            )
        try:
            text = reply.text()
        finally:
            server.release()
        t = reply.turn
        message, finish = _assistant_message(text, tools), t.finish_reason or "stop"
        return {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": "tool_calls" if message.get("tool_calls") else finish}
            ],
            "usage": {
                "prompt_tokens": t.prompt_tokens,
                "completion_tokens": t.completion_tokens,
                "total_tokens": t.prompt_tokens + t.completion_tokens,
            },
            "anima": {"guard": reply.guard_dict(), **_used(reply, show)},
        }

    # --- REST: the user's own memories, conversations and personas -----------------

    def memory_of(who: str):
        return server.container(who).memory

    @app.get("/api/personas")
    def api_personas(who: str = Depends(user)) -> list[dict]:
        return [{"name": p.name, "description": p.description, "style": p.style} for p in personas().values()]

    @app.get("/api/memories")
    def api_memories(kind: str | None = None, all: bool = False, who: str = Depends(user)) -> list[dict]:
        return [asdict(m) for m in memory_of(who).store.list_memories(kind=kind, include_invalid=all)]

    @app.get("/api/memories/search")
    def api_search(
        q: str = Query(min_length=1), k: int = Query(8, ge=1, le=50), who: str = Depends(user)
    ) -> list[dict]:
        return [
            {"kind": h.kind, "id": h.id, "text": h.text, "when": h.when, "speaker": h.speaker, "score": h.score}
            for h in memory_of(who).recall(q, k=k)
        ]

    @app.post("/api/memories", status_code=201)
    def api_add(body: MemoryIn, who: str = Depends(user)) -> dict:
        return asdict(memory_of(who).add(body.text, body.kind, ref_date=body.date))

    @app.patch("/api/memories/{memory_id}")
    def api_edit(body: MemoryEdit, memory_id: int = row_id(), who: str = Depends(user)) -> dict:
        return asdict(memory_of(who).edit(memory_id, body.text, body.kind))

    @app.delete("/api/memories/{memory_id}", status_code=204)
    def api_forget(memory_id: int = row_id(), who: str = Depends(user)) -> None:
        memory_of(who).forget(memory_id)

    @app.get("/api/memories/{memory_id}/why")
    def api_why(memory_id: int = row_id(), who: str = Depends(user)) -> dict:
        memory, episodes = memory_of(who).why(memory_id)
        return {"memory": asdict(memory), "sources": [asdict(e) for e in episodes]}

    @app.get("/api/memories/export")
    def api_export(who: str = Depends(user)) -> dict:
        return memory_of(who).export()

    @app.get("/api/conversations")
    def api_conversations(limit: int = Query(50, ge=1, le=1000), who: str = Depends(user)) -> list[dict]:
        return [asdict(c) for c in server.container(who).store.conversations(limit)]

    @app.get("/api/conversations/{conversation_id}")
    def api_conversation(conversation_id: int = row_id(), who: str = Depends(user)) -> list[dict]:
        turns = server.container(who).store.turns(conversation_id)
        if not turns:
            raise ApiError(404, f"no conversation {conversation_id}", "invalid_request_error", "not_found")
        return [asdict(t) for t in turns]

    app.include_router(inbox_router(server, user))  # /api/inbox, /api/briefing, /api/reminders
    web.mount(app, server, user)  # the web page at /, /api/audit, /api/settings
    return app


class MemoryIn(BaseModel):
    text: str = Field(min_length=1, max_length=4000)
    kind: str = "fact"
    date: str | None = Field(None, pattern=r"^\d{4}(-\d{2}(-\d{2})?)?$")


class MemoryEdit(BaseModel):
    text: str | None = Field(None, min_length=1, max_length=4000)
    kind: str | None = None


def _message(m: ChatMessage) -> dict[str, Any]:
    """A client's message as the chat template takes it (tool-call arguments as objects)."""
    out: dict[str, Any] = {"role": m.role, "content": m.text()}
    calls = (m.model_extra or {}).get("tool_calls")
    if m.role == "assistant" and isinstance(calls, list):
        out["tool_calls"] = [
            {
                "type": "function",
                "function": {
                    "name": (c.get("function") or {}).get("name", ""),
                    "arguments": _loads((c.get("function") or {}).get("arguments")),
                },
            }
            for c in calls
            if isinstance(c, dict)
        ]
    return out


def _loads(arguments: Any) -> Any:
    try:
        return json.loads(arguments) if isinstance(arguments, str) else (arguments or {})
    except ValueError:
        return arguments


def _assistant_message(text: str, tools: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The reply as an OpenAI message: tool calls the model wrote become `tool_calls`."""
    names = {(t.get("function") or {}).get("name") for t in tools or []}
    content, calls = split_tool_calls(text, names) if tools else (text, [])
    if not calls:
        return {"role": "assistant", "content": text}
    return {
        "role": "assistant",
        "content": content or None,
        "tool_calls": [
            {
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
            }
            for c in calls
        ],
    }


def _schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    if not response_format or response_format.get("type") in (None, "text"):
        return None
    if response_format["type"] == "json_object":
        return response_format.get("schema") or {"type": "object"}
    if response_format["type"] == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise ApiError(
                400,
                "response_format.json_schema.schema must be a JSON schema object",
                "invalid_request_error",
                "invalid_value",
                "response_format",
            )
        return schema
    raise ApiError(
        400,
        f"unknown response_format type {response_format['type']!r}",
        "invalid_request_error",
        "invalid_value",
        "response_format",
    )


def _used(reply, show_prompt: bool = False) -> dict[str, Any]:
    """What anima adds beside the OpenAI fields: the stored conversation, and the memories
    and past messages (`kind` "memory" | "episode") the reply was given; on request, the
    messages the model was given."""
    return {
        **({"prompt": reply.messages} if show_prompt else {}),
        "conversation": reply.turn.conversation_id,
        "memories": [{"kind": h.kind, "id": h.id, "text": h.text, "when": h.when} for h in reply.hits],
    }


def _sse(
    server: Server,
    reply,
    ident: str,
    created: int,
    model: str,
    include_usage: bool,
    tools: list[dict[str, Any]] | None = None,
    show_prompt: bool = False,
) -> Iterator[str]:
    """The reply as OpenAI chat.completion.chunk events, then `data: [DONE]`. With tools
    on offer the reply is gathered first: a tool call is sent whole, as one delta.
    The first chunk also carries `anima` (see `_used`), which OpenAI clients ignore."""

    def event(delta: dict, finish: str | None = None, **extra) -> str:
        chunk = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(chunk)}\n\n"

    try:
        yield event({"role": "assistant", "content": ""}, anima=_used(reply, show_prompt))
        finish = None
        try:
            if tools:
                message = _assistant_message(reply.text(), tools)
                calls = [{"index": i, **c} for i, c in enumerate(message.get("tool_calls") or [])]
                yield event({"tool_calls": calls} if calls else {"content": message["content"]})
                finish = "tool_calls" if calls else None
            else:
                for piece in reply:
                    yield event({"content": piece})
        except AnimaError as exc:  # headers are sent: report in the stream, as OpenAI does
            yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error', 'code': exc.code}})}\n\n"
            return
        except Exception as exc:  # a bug: one log line with an id, the stream ends with an error event
            ref = uuid.uuid4().hex[:8]
            log.error("internal error %s in a streamed reply: %s: %s", ref, type(exc).__name__, exc)
            log.debug("internal error %s", ref, exc_info=exc)
            error = {
                "error": {"message": f"internal error (id {ref})", "type": "server_error", "code": "internal_error"}
            }
            yield f"data: {json.dumps(error)}\n\n"
            return
        t = reply.turn
        yield event({}, finish or t.finish_reason or "stop")
        if include_usage:
            usage = {
                "prompt_tokens": t.prompt_tokens,
                "completion_tokens": t.completion_tokens,
                "total_tokens": t.prompt_tokens + t.completion_tokens,
            }
            usage_chunk = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            yield f"data: {json.dumps(usage_chunk)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        reply.close()  # a client that went away stops the generation; the partial turn is logged
        server.release()
