"""Real HTTP servers on loopback for tests: an OpenAI-compatible app of our own
(served by uvicorn in a thread) and a static file server with Range support; and a
bounded load generator to put a server under back-to-back streaming clients."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from anima.bench.served import StreamError, content_deltas, free_port, run_clients, sse_events


def tiny_openai_app(reply: str = "Hello from the tiny server.", key: str = "sk-test") -> FastAPI:
    """Just enough of the OpenAI API: /v1/models, /v1/chat/completions (SSE), /v1/embeddings.
    Every request body is kept in `app.state.requests`."""
    app = FastAPI()
    app.state.requests = []

    def authorised(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {key}"

    @app.get("/v1/models")
    def models(request: Request):
        if not authorised(request):
            return JSONResponse({"error": {"message": "bad key", "type": "auth"}}, 401)
        return {"object": "list", "data": [{"id": "tiny-1", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if not authorised(request):
            return JSONResponse({"error": {"message": "bad key", "type": "auth"}}, 401)
        body = await request.json()
        app.state.requests.append(body)
        if body["model"] != "tiny-1":
            return JSONResponse({"error": {"message": f"model {body['model']} not found"}}, 404)
        text = json.dumps({"ok": True}) if body.get("response_format") else reply
        words = text.split(" ")

        def events() -> Iterator[str]:
            yield "data: " + json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}) + "\n\n"
            for i, w in enumerate(words):
                piece = w if i == len(words) - 1 else w + " "
                yield (
                    "data: "
                    + json.dumps({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                    + "\n\n"
                )
            yield "data: " + json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + "\n\n"
            yield (
                "data: "
                + json.dumps({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": len(words)}})
                + "\n\n"
            )
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await request.json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"index": i, "embedding": [float(len(t)), 1.0, 0.0]} for i, t in enumerate(inputs)]
        return {"data": list(reversed(data)), "model": body["model"]}

    return app


@contextlib.contextmanager
def serve_app(app) -> Iterator[str]:
    """Run an ASGI app with uvicorn on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started:
        assert time.time() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)


class RangeFileHandler(http.server.BaseHTTPRequestHandler):
    """Serves files from `root` with HTTP Range; `cut_after` bytes then drops the
    connection once per path (to test resume); `ignore_range` answers 200 always."""

    root: Path
    cut_after: int | None = None
    ignore_range = False
    hits: list[tuple[str, str | None]]

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        self.hits.append((self.path, self.headers.get("Range")))
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and not self.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_after is not None and start == 0 and len(body) > self.cut_after:
            self.wfile.write(body[: self.cut_after])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # drop mid-download
            return
        self.wfile.write(body)


@contextlib.contextmanager
def serve_files(root: Path, cut_after: int | None = None, ignore_range: bool = False) -> Iterator[tuple[str, list]]:
    hits: list = []
    handler = type(
        "Handler",
        (RangeFileHandler,),
        {"root": root, "cut_after": cut_after, "ignore_range": ignore_range, "hits": hits},
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def two_users(home: Path, model=None, **server_kw) -> Iterator[tuple[str, dict[str, str], object]]:
    """anima's server on loopback with two users, alice and bob, the fake backend and
    no learning; yields (url, keys, server)."""
    from anima.config import load_config
    from anima.models.fake import FakeChatModel, FakeEmbedder
    from anima.server import Server, create_app
    from anima.store.accounts import Accounts

    accounts = Accounts(home / "accounts.db")
    keys = {"alice": accounts.add("alice"), "bob": accounts.add("bob")}
    config = load_config(backend="fake")
    config.memory.learn = False
    server = Server(config, accounts, model or FakeChatModel(), FakeEmbedder(), **server_kw)
    with serve_app(create_app(server)) as url:
        yield url, keys, server


# --- a bounded load generator (the server under back-to-back streaming clients) ---

PROMPTS = [
    "Give me one tip for staying focused.",
    "What is a good name for a goldfish?",
    "Explain recursion in one sentence.",
    "Suggest a quick healthy breakfast.",
]


@dataclass
class LoadResult:
    clients: int
    duration_s: float
    latencies_ms: list[float] = field(default_factory=list)
    tokens: int = 0
    rejected: int = 0  # 429: the queue was full
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        lat = sorted(self.latencies_ms)
        pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None
        return {
            "clients": self.clients,
            "duration_s": round(self.duration_s, 1),
            "requests": len(lat),
            "requests_per_s": round(len(lat) / self.duration_s, 3),
            "tokens_per_s": round(self.tokens / self.duration_s, 2),
            "latency_p50_ms": pick(0.50),
            "latency_p95_ms": pick(0.95),
            "latency_p99_ms": pick(0.99),
            "rejected_429": self.rejected,
            "errors": len(self.errors),
            "error_examples": self.errors[:3],
        }


def load(
    base_url: str,
    model: str,
    clients: int,
    duration: float,
    api_key: str = "none",
    max_tokens: int = 32,
    progress: Callable[[float], None] | None = None,
) -> LoadResult:
    """Run `clients` streaming clients against `base_url` (…/v1) for `duration` seconds."""
    result, lock = LoadResult(clients, duration), threading.Lock()
    started = time.monotonic()
    stop_at = started + duration

    def client(n: int) -> None:
        http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=httpx.Timeout(300.0, connect=5.0)
        )
        i = n
        while time.monotonic() < stop_at:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                "max_tokens": max_tokens,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            i += clients
            start, tokens = time.perf_counter(), 0
            try:
                with http.stream("POST", "/chat/completions", json=body) as r:
                    if r.status_code == 429:
                        with lock:
                            result.rejected += 1
                        time.sleep(0.2)
                        continue
                    if r.status_code != 200:
                        r.read()
                        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:120]}")
                    for event in sse_events(r):
                        # one content delta per generated token on both servers (llama-cpp-python's
                        # server sends no usage when streaming), so both are counted the same way
                        tokens += content_deltas(event)
            except (httpx.HTTPError, RuntimeError, StreamError, ValueError) as exc:
                with lock:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                result.latencies_ms.append((time.perf_counter() - start) * 1000)
                result.tokens += tokens

    run_clients(client, clients, started, duration, progress)
    result.duration_s = time.monotonic() - started  # requests in flight at the deadline finish, and count
    return result
