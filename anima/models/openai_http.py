"""Any OpenAI-compatible server: Ollama, vLLM, llama.cpp's llama-server, a closed API.

Plain httpx, no SDK: one POST to `/chat/completions` read as server-sent events.
httpx's exceptions are mapped to ours at this edge; nothing above sees them.

Several servers with the same model can stand behind one backend (`_Pool`): each
request goes to the one that is up with the fewest requests in flight (ties in turn).
A server that cannot be reached, times out or answers 5xx before the first token is
marked down and the request goes to the next; one that dies after the first token
fails that reply (its text cannot be taken back). While any server is down a thread
asks it for `/models` every few seconds, and it takes requests again once it answers.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

import httpx

from anima.errors import AnimaError, ModelNotFound, ModelUnavailable
from anima.models.base import Capabilities, Chunk, Message, Options, Usage

T = TypeVar("T")
PROBE_S = 3.0  # how often a down server is asked whether it is back
PROBE_TIMEOUT_S = 2.0  # a health check that takes longer counts as no answer


class _ServerDown(ModelUnavailable):
    """This server did not answer (connection, timeout, 5xx): another one may."""


@contextlib.contextmanager
def _mapped_errors(base_url: str) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        hint = "is the server overloaded? raise openai_http.timeout"
        raise _ServerDown(f"{base_url} did not answer in time", hint) from exc
    except httpx.TransportError as exc:
        raise _ServerDown(f"cannot reach {base_url}: {exc}", "start the server, or fix openai_http.base_url") from exc


class _Client:
    def __init__(
        self, base_url: str, api_key: str = "", timeout: float = 120.0, transport: httpx.BaseTransport | None = None
    ):
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout, connect=5.0), transport=transport
        )

    def check(self, response: httpx.Response, model: str) -> None:
        if response.status_code < 400:
            return
        response.read()
        try:
            detail = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            detail = response.text
        detail = " ".join(str(detail).split())[:200]  # one line, whatever the server sent
        if response.status_code in (401, 403):
            raise ModelUnavailable(
                f"{self.base_url} refused the API key ({response.status_code}): {detail}", "set openai_http.api_key"
            )
        if response.status_code == 404:
            raise ModelNotFound(
                f"{self.base_url} has no model '{model}' ({detail})",
                "set openai_http.model to one it lists at /v1/models",
            )
        error = _ServerDown if response.status_code >= 500 else ModelUnavailable
        raise error(f"{self.base_url} answered {response.status_code}: {detail}", "check the server's log")

    def first_model(self) -> str:
        with _mapped_errors(self.base_url):
            response = self.http.get("/models")
        self.check(response, "")
        try:
            return response.json()["data"][0]["id"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModelUnavailable(f"{self.base_url}/models lists no model", "set openai_http.model") from exc

    def answers(self) -> bool:
        """The health check: does the server answer GET /models at all?"""
        try:
            return self.http.get("/models", timeout=PROBE_TIMEOUT_S).status_code < 500
        except httpx.HTTPError:
            return False


@dataclass(eq=False)
class _Upstream:
    client: _Client
    in_flight: int = 0
    down: bool = False


class _Pool:
    """The servers of one backend, with their requests in flight and which are down."""

    def __init__(self, clients: list[_Client]):
        assert clients, "a backend needs at least one server"
        self.upstreams = [_Upstream(c) for c in clients]
        self.lock = threading.Lock()
        self.turn = 0  # round-robin among the equally busy
        self.prober: threading.Thread | None = None
        self.probe_s = PROBE_S

    def stream(self, attempt: Callable[[_Client], Iterable[T]]) -> Iterator[T]:
        """Run `attempt` on the least busy server that is up, moving on while one fails
        before yielding anything."""
        tried: list[_Upstream] = []
        last: _ServerDown | None = None
        while upstream := self._take(tried):
            started = False
            try:
                for item in attempt(upstream.client):
                    started = True
                    yield item
                self._mark(upstream, down=False)  # it answered: up again if it was down
                return
            except _ServerDown as exc:
                self._mark(upstream, down=True)
                if started:  # its text is out: another server would start the reply over
                    where = upstream.client.base_url
                    raise ModelUnavailable(f"{where} stopped in the middle of a reply", "ask again") from exc
                last = exc
            finally:
                with self.lock:
                    upstream.in_flight -= 1
        assert last is not None, "every server was tried, so one failed"
        if len(self.upstreams) == 1:
            raise last  # one server: its own error, as it always was
        urls = ", ".join(u.client.base_url for u in tried)
        raise ModelUnavailable(
            f"no model server answers: tried {urls}",
            f"start one or check openai_http.base_urls; the last said: {last.message}",
        ) from last

    def call(self, attempt: Callable[[_Client], T]) -> T:
        """One request that is not streamed, with the same routing and failover."""
        [result] = self.stream(lambda client: [attempt(client)])
        return result

    def _take(self, tried: list[_Upstream]) -> _Upstream | None:
        with self.lock:
            fresh = [u for u in self.upstreams if u not in tried]
            candidates = [u for u in fresh if not u.down] or fresh  # a down one gets a try when nothing else is left
            if not candidates:
                return None
            least = min(u.in_flight for u in candidates)
            ties = [u for u in candidates if u.in_flight == least]
            chosen = ties[self.turn % len(ties)]
            self.turn += 1
            chosen.in_flight += 1
            tried.append(chosen)
            return chosen

    def _mark(self, upstream: _Upstream, down: bool) -> None:
        with self.lock:
            upstream.down = down
            if down and len(self.upstreams) > 1 and self.prober is None:
                self.prober = threading.Thread(target=self._probe, name="anima-openai-probe", daemon=True)
                self.prober.start()

    def _probe(self) -> None:
        """Runs while any server is down: asks each down one whether it is back."""
        while True:
            time.sleep(self.probe_s)
            with self.lock:
                down = [u for u in self.upstreams if u.down]
                if not down:
                    self.prober = None
                    return
            for upstream in down:
                if upstream.client.answers():
                    with self.lock:
                        upstream.down = False


def _pool(base_url: str | list[str], api_key: str, timeout: float, transport: httpx.BaseTransport | None) -> _Pool:
    urls = [base_url] if isinstance(base_url, str) else base_url
    return _Pool([_Client(url, api_key, timeout, transport) for url in urls])


def _json_or_text(arguments: str) -> Any:
    try:
        return json.loads(arguments) if arguments else {}
    except ValueError:
        return arguments


class _Refused(Exception):
    """The server would not take this response_format; try the other shape."""


def _response_format(fmt: str, schema: dict[str, Any]) -> dict[str, Any]:
    if fmt == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}
    return {"type": "json_object", "schema": schema}


class OpenAIChatModel:
    """`base_url` is one server's API root (…/v1) or a list of servers with the same model."""

    def __init__(
        self,
        base_url: str | list[str],
        model: str = "",
        api_key: str = "",
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.pool = _pool(base_url, api_key, timeout, transport)
        self.model = model or self.pool.call(_Client.first_model)
        self.name = f"{self.model}@{','.join(u.client.base_url for u in self.pool.upstreams)}"
        from anima.safety.egress import is_local

        urls = [u.client.base_url for u in self.pool.upstreams]
        self.capabilities = Capabilities(remote=next((u for u in urls if not is_local(u)), ""))
        # OpenAI's structured-output shape; llama-cpp-python's server only takes
        # {"type": "json_object", "schema": ...}. We switch once if the first is refused.
        self.json_format = "json_schema"

    def stream(self, messages: list[Message], options: Options) -> Iterator[Chunk]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "top_p": options.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if options.stop:
            body["stop"] = options.stop
        if options.seed is not None:
            body["seed"] = options.seed
        if options.tools:
            body["tools"] = options.tools
        if options.json_schema is None:
            yield from self._post(body)
            return
        for fmt in dict.fromkeys([self.json_format, "json_object"]):
            body["response_format"] = _response_format(fmt, options.json_schema)
            try:
                yield from self._post(body, retry_able=fmt != "json_object")
                self.json_format = fmt
                return
            except _Refused:
                continue

    def _post(self, body: dict[str, Any], retry_able: bool = False) -> Iterator[Chunk]:
        def attempt(client: _Client) -> Iterator[Chunk]:
            with _mapped_errors(client.base_url), client.http.stream("POST", "/chat/completions", json=body) as reply:
                if retry_able and reply.status_code in (400, 422, 500):
                    raise _Refused()
                client.check(reply, self.model)
                yield from self._events(reply, client.base_url)

        yield from self.pool.stream(attempt)

    def _events(self, response: httpx.Response, base_url: str) -> Iterator[Chunk]:
        finish, usage, calls, done = None, None, {}, False
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue  # comments, "event:" lines and keep-alives
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            try:
                event = json.loads(data)
            except ValueError as exc:
                raise ModelUnavailable(
                    f"{base_url} sent a malformed event: {data[:80]!r}", "is it really OpenAI-compatible?"
                ) from exc
            if "error" in event:
                raise AnimaError(f"{base_url} reported: {event['error'].get('message', event['error'])}")
            if event.get("usage"):
                usage = Usage(event["usage"].get("prompt_tokens", 0), event["usage"].get("completion_tokens", 0))
            for choice in event.get("choices") or []:
                finish = choice.get("finish_reason") or finish
                delta = choice.get("delta") or {}
                if text := delta.get("content"):
                    yield Chunk(text)
                for call in delta.get("tool_calls") or []:  # streamed as pieces: name first, then arguments
                    fn = call.get("function") or {}
                    slot = calls.setdefault(call.get("index", 0), {"name": "", "arguments": ""})
                    slot["name"] += fn.get("name") or ""
                    slot["arguments"] += fn.get("arguments") or ""
        if not done and finish is None:  # the connection closed cleanly, but in the middle of the reply
            raise _ServerDown(f"{base_url} closed the stream before the reply ended", "check the server's log")
        for call in calls.values():  # the same shape the local models write (see anima.tools.calls)
            text = json.dumps({"name": call["name"], "arguments": _json_or_text(call["arguments"])})
            yield Chunk(f"<tool_call>{text}</tool_call>")
        yield Chunk("", finish or "stop", usage)

    def count_tokens(self, text: str) -> int:
        # The server's tokenizer is not ours to call; ~4 characters a token is the usual estimate.
        return max(1, len(text) // 4) if text else 0


class OpenAIEmbedder:
    def __init__(
        self,
        base_url: str | list[str],
        model: str = "",
        api_key: str = "",
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.pool = _pool(base_url, api_key, timeout, transport)
        self.model = model or self.pool.call(_Client.first_model)
        self.name = f"{self.model}@{','.join(u.client.base_url for u in self.pool.upstreams)}"
        self.dim = len(self.embed(["dimension probe"])[0])

    def embed(self, texts: list[str]) -> list[list[float]]:
        def attempt(client: _Client) -> list[list[float]]:
            with _mapped_errors(client.base_url):
                response = client.http.post("/embeddings", json={"model": self.model, "input": texts})
            client.check(response, self.model)
            rows = sorted(response.json()["data"], key=lambda row: row["index"])
            return [row["embedding"] for row in rows]

        return self.pool.call(attempt)
