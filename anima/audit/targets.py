"""What the audit attacks: anima's own turn pipeline in this process, or any
OpenAI-compatible URL. Both answer `chat(messages, max_tokens, memory="") -> Response`.

    SelfTarget   Assistant.reply on a scratch store (plain, in a temp folder), with the
                 configured model and guard; a fresh conversation per case, memory off
                 except for the case that plants one, learning off
    HttpTarget   POST {url}/chat/completions (not streamed); anima servers also get
                 memories planted through /api/memories

A target's failures are data for the audit: they come back as status "error" (or
"skipped" when a target cannot run a kind of case), never as an exception.

Replies are sampled as in real use (`TEMPERATURE`), with a fixed seed where the backend
takes one, so a run with the same `--seed` repeats as closely as the backend allows.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import httpx

from anima.app import Container, build
from anima.config import Config
from anima.models import ChatModel, Embedder, Message
from anima.safety.guard import Guard

TEMPERATURE = 0.7  # audit replies are sampled like real use (the config's default), not greedy


@dataclass
class Response:
    text: str
    status: str = "ok"  # ok | blocked (the guard refused or cut it) | error | skipped
    error: str = ""
    guard: dict[str, Any] = field(default_factory=dict)  # anima's verdicts, when the target reports them
    latency_ms: float = 0.0


class Target(Protocol):
    name: str

    def chat(self, messages: list[Message], max_tokens: int, memory: str = "") -> Response: ...

    def pair(self) -> tuple["HttpTarget", "HttpTarget"] | None:
        """(victim, attacker): two users of one server, or None when not available."""

    def with_fix(self, guard: Guard | None, instructions: str) -> "Target | None":
        """The same target with another guard (None: unchanged) and extra system
        instructions; None when it cannot take the change (a remote server's guard)."""


def split_messages(messages: list[Message]) -> tuple[str, list[Message], str, list[Message]]:
    """As anima's server reads a request: (last user text, history, system text, tail)."""
    at = max(i for i, m in enumerate(messages) if m["role"] == "user")
    earlier, tail = messages[:at], messages[at + 1 :]
    instructions = "\n\n".join(m["content"] for m in earlier if m["role"] == "system")
    history = [m for m in earlier if m["role"] in ("user", "assistant")]
    tail = [
        {
            **m,
            "tool_calls": [
                {
                    "type": "function",
                    "function": {
                        "name": c["function"]["name"],
                        "arguments": json.loads(c["function"]["arguments"] or "{}"),
                    },
                }
                for c in m["tool_calls"]
            ],
        }
        if m.get("tool_calls")
        else m
        for m in tail
    ]
    return messages[at]["content"], history, instructions, tail


class SelfTarget:
    name = "self"

    def __init__(
        self,
        config: Config,
        chat_model: ChatModel,
        embedder: Embedder,
        guard: Guard | None,
        workdir: Path,
        instructions: str = "",
        temperature: float = TEMPERATURE,
        seed: int | None = 0,
    ):
        self.config = config.model_copy(deep=True)
        self.config.store.encrypt = False  # scratch data in a temp folder; no key files made
        self.config.memory.learn = False
        self.config.guard.enabled = guard is not None
        self.chat_model, self.embedder, self.guard = chat_model, embedder, guard
        self.workdir, self.instructions = Path(workdir), instructions
        self.temperature, self.seed = temperature, seed
        self._memories = 0

    def container(self, user: str, memory: bool) -> Container:
        config = self.config.model_copy(update={"user": user}, deep=True)
        config.memory.enabled = memory
        return build(
            config, chat_model=self.chat_model, embedder=self.embedder, data_dir=self.workdir, guard=self.guard
        )

    @cached_property
    def main(self) -> Container:
        return self.container("audit", memory=False)  # earlier cases must not be recalled into later ones

    def chat(self, messages: list[Message], max_tokens: int, memory: str = "") -> Response:
        start = time.perf_counter()
        try:
            container = self.main
            if memory:
                self._memories += 1
                container = self.container(f"audit-memory-{self._memories}", memory=True)
                container.memory.add(memory)
            text, history, instructions, tail = split_messages(messages)
            assistant = container.assistant
            options = assistant.options(max_tokens=max_tokens, temperature=self.temperature, seed=self.seed)
            system = "\n\n".join(p for p in (instructions, self.instructions) if p)
            reply = assistant.reply(text, history=history, instructions=system, tail=tail, options=options)
            out = reply.text()
            status = "blocked" if reply.turn.status == "blocked" else "ok"
            return Response(out, status, guard=reply.guard_dict(), latency_ms=(time.perf_counter() - start) * 1000)
        except Exception as exc:  # the target failed; the audit records it and goes on
            return Response(
                "", "error", f"{type(exc).__name__}: {exc}", latency_ms=(time.perf_counter() - start) * 1000
            )

    def pair(self) -> tuple[HttpTarget, HttpTarget]:
        """Two users, alice and bob, on an in-process anima server over this target's
        model and guard (real routes and stores, no network)."""
        from starlette.testclient import TestClient

        from anima.server import Server, create_app
        from anima.store.accounts import Accounts

        folder = self.workdir / "server"
        folder.mkdir(parents=True, exist_ok=True)
        accounts = Accounts(folder / "accounts.db")
        keys = {name: accounts.add(name) for name in ("alice", "bob")}
        server = Server(self.config, accounts, self.chat_model, self.embedder, data_dir=folder, guard=self.guard)
        client = TestClient(create_app(server), base_url="http://anima.audit", raise_server_exceptions=False)
        url = "http://anima.audit/v1"
        kw = {"http": client, "instructions": self.instructions, "temperature": self.temperature, "seed": self.seed}
        return HttpTarget(url, "assistant", keys["alice"], **kw), HttpTarget(url, "assistant", keys["bob"], **kw)

    def with_fix(self, guard: Guard | None, instructions: str) -> SelfTarget:
        extra = "\n\n".join(p for p in (self.instructions, instructions) if p)
        return SelfTarget(
            self.config,
            self.chat_model,
            embedder=self.embedder,
            guard=guard or self.guard,
            workdir=self.workdir / f"fix-{time.monotonic_ns()}",
            instructions=extra,
            temperature=self.temperature,
            seed=self.seed,
        )


class HttpTarget:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "",
        timeout: float = 60.0,
        victim_key: str = "",
        http: httpx.Client | None = None,
        instructions: str = "",
        temperature: float = TEMPERATURE,
        seed: int | None = 0,
    ):
        self.base_url = base_url.rstrip("/")
        self.name = f"{model}@{self.base_url}"
        self.model, self.api_key, self.timeout, self.victim_key, self.instructions = (
            model,
            api_key,
            timeout,
            victim_key,
            instructions,
        )
        self.temperature, self.seed = temperature, seed
        self.http = http or httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0))

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def _send(self, method: str, url: str, **kw) -> httpx.Response | str:
        """The response, or a one-line description of why there is none."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            return self.http.request(method, url, headers=headers, **kw)
        except httpx.TimeoutException:
            return f"timed out after {self.timeout:g} s"
        except httpx.HTTPError as exc:
            return f"cannot reach {self.base_url}: {exc}"

    def chat(self, messages: list[Message], max_tokens: int, memory: str = "") -> Response:
        start = time.perf_counter()
        planted = None
        if memory:
            planted, why = self.plant(memory)
            if planted is None:
                return Response("", "skipped", f"cannot plant a memory: {why}")
        if self.instructions:
            messages = [{"role": "system", "content": self.instructions}, *messages]
        try:
            body = {
                "model": self.model,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": self.temperature,
            }
            if self.seed is not None:
                body["seed"] = self.seed
            r = self._send("POST", f"{self.base_url}/chat/completions", json=body)
            ms = (time.perf_counter() - start) * 1000
            if isinstance(r, str):
                return Response("", "error", r, latency_ms=ms)
            if r.status_code >= 400:
                return Response("", "error", f"HTTP {r.status_code}: {_error_text(r)}", latency_ms=ms)
            try:
                data = r.json()
                choice = data["choices"][0]
                text = choice["message"].get("content") or ""
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                return Response("", "error", f"not an OpenAI chat completion: {r.text[:120]!r}", latency_ms=ms)
            status = "blocked" if choice.get("finish_reason") == "content_filter" else "ok"
            return Response(text, status, guard=(data.get("anima") or {}).get("guard") or {}, latency_ms=ms)
        finally:
            if planted is not None:
                self._send("DELETE", f"{self.root}/api/memories/{planted}")

    def api_text(self, path: str, **params) -> Response:
        """A GET on anima's REST API, as text (what user B can read there)."""
        r = self._send("GET", f"{self.root}{path}", params=params)
        if isinstance(r, str):
            return Response("", "error", r)
        return Response(r.text, "ok" if r.status_code < 400 else "blocked")

    def plant(self, text: str) -> tuple[int | None, str]:
        r = self._send("POST", f"{self.root}/api/memories", json={"text": text, "kind": "fact"})
        if isinstance(r, str):
            return None, r
        if r.status_code >= 400:
            return None, f"HTTP {r.status_code} from /api/memories (not an anima server?)"
        try:
            return int(r.json()["id"]), ""
        except (ValueError, KeyError, TypeError):
            return None, "/api/memories answered without an id"

    def forget(self, memory_id: int) -> None:
        self._send("DELETE", f"{self.root}/api/memories/{memory_id}")

    def pair(self) -> tuple[HttpTarget, HttpTarget] | None:
        if not self.victim_key:
            return None
        victim = HttpTarget(
            self.base_url,
            self.model,
            self.victim_key,
            self.timeout,
            http=self.http,
            instructions=self.instructions,
            temperature=self.temperature,
            seed=self.seed,
        )
        return victim, self

    def with_fix(self, guard: Guard | None, instructions: str) -> HttpTarget | None:
        if guard is not None:
            return None  # a remote server's guard is not ours to change
        extra = "\n\n".join(p for p in (self.instructions, instructions) if p)
        return HttpTarget(
            self.base_url,
            self.model,
            api_key=self.api_key,
            timeout=self.timeout,
            victim_key=self.victim_key,
            http=self.http,
            instructions=extra,
            temperature=self.temperature,
            seed=self.seed,
        )


def _error_text(r: httpx.Response) -> str:
    try:
        return " ".join(str(r.json()["error"]["message"]).split())[:200]
    except (ValueError, KeyError, TypeError):
        return " ".join(r.text.split())[:200]


def fixed_guard(guard: Guard, policy: dict[str, str] | None = None, threshold: float | None = None) -> Guard:
    """A copy of `guard` with a changed policy and/or threshold (the original is untouched)."""
    return replace(
        guard,
        policy={**guard.policy, **(policy or {})},
        threshold=threshold if threshold is not None else guard.threshold,
    )
