"""Any OpenAI-compatible server: Ollama, vLLM, llama.cpp's llama-server, a closed API.

Plain httpx, no SDK: one POST to `/chat/completions` read as server-sent events.
httpx's exceptions are mapped to ours at this edge; nothing above sees them.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Iterator

import httpx

from anima.errors import AnimaError, ModelNotFound, ModelUnavailable
from anima.models.base import Chunk, Message, Options, Usage


@contextlib.contextmanager
def _mapped_errors(base_url: str) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ModelUnavailable(f"{base_url} did not answer in time", "is the server overloaded? raise openai_http.timeout") from exc
    except httpx.TransportError as exc:
        raise ModelUnavailable(f"cannot reach {base_url}: {exc}", "start the server, or fix openai_http.base_url") from exc


class _Client:
    def __init__(self, base_url: str, api_key: str = "", timeout: float = 120.0, transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout, connect=5.0), transport=transport)

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
            raise ModelUnavailable(f"{self.base_url} refused the API key ({response.status_code}): {detail}", "set openai_http.api_key")
        if response.status_code == 404:
            raise ModelNotFound(f"{self.base_url} has no model '{model}' ({detail})", "set openai_http.model to one it lists at /v1/models")
        raise ModelUnavailable(f"{self.base_url} answered {response.status_code}: {detail}", "check the server's log")

    def first_model(self) -> str:
        with _mapped_errors(self.base_url):
            response = self.http.get("/models")
        self.check(response, "")
        try:
            return response.json()["data"][0]["id"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModelUnavailable(f"{self.base_url}/models lists no model", "set openai_http.model") from exc


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
    def __init__(self, base_url: str, model: str = "", api_key: str = "", timeout: float = 120.0, transport: httpx.BaseTransport | None = None):
        self.client = _Client(base_url, api_key, timeout, transport)
        self.model = model or self.client.first_model()
        self.name = f"{self.model}@{self.client.base_url}"
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
        with _mapped_errors(self.client.base_url), self.client.http.stream("POST", "/chat/completions", json=body) as response:
            if retry_able and response.status_code in (400, 422, 500):
                raise _Refused()
            self.client.check(response, self.model)
            yield from self._events(response)

    def _events(self, response: httpx.Response) -> Iterator[Chunk]:
        finish, usage, calls = None, None, {}
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue  # comments, "event:" lines and keep-alives
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                event = json.loads(data)
            except ValueError as exc:
                raise ModelUnavailable(f"{self.client.base_url} sent a malformed event: {data[:80]!r}", "is it really OpenAI-compatible?") from exc
            if "error" in event:
                raise AnimaError(f"{self.client.base_url} reported: {event['error'].get('message', event['error'])}")
            if event.get("usage"):
                usage = Usage(event["usage"].get("prompt_tokens", 0), event["usage"].get("completion_tokens", 0))
            for choice in event.get("choices") or []:
                finish = choice.get("finish_reason") or finish
                delta = choice.get("delta") or {}
                if text := delta.get("content"):
                    yield Chunk(text)
                for call in delta.get("tool_calls") or []:  # streamed as pieces: name first, then arguments
                    fn, slot = call.get("function") or {}, calls.setdefault(call.get("index", 0), {"name": "", "arguments": ""})
                    slot["name"] += fn.get("name") or ""
                    slot["arguments"] += fn.get("arguments") or ""
        for call in calls.values():  # the same shape the local models write (see split_tool_calls)
            yield Chunk(f"<tool_call>{json.dumps({'name': call['name'], 'arguments': _json_or_text(call['arguments'])})}</tool_call>")
        yield Chunk("", finish or "stop", usage)

    def count_tokens(self, text: str) -> int:
        # The server's tokenizer is not ours to call; ~4 characters a token is the usual estimate.
        return max(1, len(text) // 4) if text else 0


class OpenAIEmbedder:
    def __init__(self, base_url: str, model: str = "", api_key: str = "", timeout: float = 60.0, transport: httpx.BaseTransport | None = None):
        self.client = _Client(base_url, api_key, timeout, transport)
        self.model = model or self.client.first_model()
        self.name = f"{self.model}@{self.client.base_url}"
        self.dim = len(self.embed(["dimension probe"])[0])

    def embed(self, texts: list[str]) -> list[list[float]]:
        with _mapped_errors(self.client.base_url):
            response = self.client.http.post("/embeddings", json={"model": self.model, "input": texts})
        self.client.check(response, self.model)
        rows = sorted(response.json()["data"], key=lambda row: row["index"])
        return [row["embedding"] for row in rows]
