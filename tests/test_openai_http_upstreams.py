"""Several OpenAI-compatible servers behind one openai_http backend: least-busy routing,
failover before the first token, a server coming back, and the errors when none answers.

The servers are real HTTP servers on loopback (http.server in threads) that can be
stopped like a killed process: the port closes and the requests they hold lose their
connection. The test marked `model` does the same with two `llama_cpp.server` processes.
"""

from __future__ import annotations

import collections
import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Iterator

import httpx
import pytest

from anima.app import build
from anima.config import load_config
from anima.errors import ConfigError, ModelUnavailable
from anima.models import load_chat_model, load_embedder
from anima.models.base import Options, complete
from anima.models.openai_http import OpenAIChatModel, OpenAIEmbedder
from tests.servers import free_port

HI = [{"role": "user", "content": "hi"}]


class _Handler(http.server.BaseHTTPRequestHandler):
    """Just enough of the OpenAI API: /v1/models, /v1/chat/completions (streamed or not)
    and /v1/embeddings. HTTP/1.0: one request a connection, the body ends when it closes."""

    server: _Httpd

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        if self.path != "/v1/models":
            return self._json(404, {"error": {"message": "no such path"}})
        self._json(200, {"object": "list", "data": [{"id": "tiny", "object": "model"}]})

    def do_POST(self):
        fake = self.server.fake
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with fake.lock:
            fake.received += 1
        deadline = time.monotonic() + fake.delay  # "reading the prompt": no byte is sent yet
        while not fake.gate.is_set() or time.monotonic() < deadline:
            if fake.dead.is_set():
                return self._cut()
            time.sleep(0.005)
        if fake.dead.is_set():
            return self._cut()
        if fake.status >= 400:
            return self._json(fake.status, {"error": {"message": "overloaded"}})
        if self.path == "/v1/embeddings":
            rows = [{"index": i, "embedding": [fake.number, 0.0]} for i, _ in enumerate(body["input"])]
            return self._json(200, {"data": rows})
        words = f"Hello from {fake.name}.".split(" ")
        pieces = [w if i == len(words) - 1 else w + " " for i, w in enumerate(words)]
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(pieces)}
            return self._json(200, {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, piece in enumerate(pieces):
            if fake.cut_after is not None and i == fake.cut_after:
                return self._cut()  # dies in the middle of the reply
            self._event({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        self.wfile.write(b"data: [DONE]\n\n")

    def _event(self, event: dict) -> None:
        self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.flush()

    def _json(self, status: int, data: dict) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _cut(self) -> None:
        self.connection.shutdown(socket.SHUT_RDWR)


class _Httpd(http.server.ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeServer


class FakeServer:
    """One OpenAI-compatible server. `gate` cleared holds every request before its first
    byte; `delay` holds each that long; `kill()` closes the port and cuts what it holds."""

    def __init__(self, name: str, number: float = 1.0, delay: float = 0.0):
        self.name, self.number, self.delay = name, number, delay
        self.lock = threading.Lock()
        self.received = 0
        self.status = 200
        self.cut_after: int | None = None
        self.gate = threading.Event()
        self.gate.set()
        self.dead = threading.Event()
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self.dead.clear()
        self.httpd = _Httpd(("127.0.0.1", self.port), _Handler)
        self.httpd.fake = self
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def kill(self) -> None:
        self.dead.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    made: list[FakeServer] = []

    def make(*names: str, delay: float = 0.0) -> list[FakeServer]:
        made.extend(FakeServer(n, number=i + 1.0, delay=delay) for i, n in enumerate(names))
        return made[-len(names) :]

    yield make
    for s in made:
        s.gate.set()
        if not s.dead.is_set():
            s.kill()


def ask(model: OpenAIChatModel) -> str:
    return complete(model, HI, Options(max_tokens=10)).text


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_idle_servers_take_turns(servers):
    a, b = servers("A", "B")
    model = OpenAIChatModel([a.url, b.url])
    assert model.model == "tiny" and model.name == f"tiny@{a.url},{b.url}"
    replies = [ask(model) for _ in range(4)]
    assert set(replies[:2]) == {"Hello from A.", "Hello from B."} and replies[2:] == replies[:2]


def test_the_least_busy_server_gets_each_request(servers):
    a, b = servers("A", "B")
    model = OpenAIChatModel([a.url, b.url], "tiny")
    a.gate.clear()
    b.gate.clear()
    with ThreadPoolExecutor(8) as pool:
        try:
            held = []
            for n in range(1, 5):  # one at a time, each once a server holds the one before
                held.append(pool.submit(ask, model))
                wait_for(lambda: a.received + b.received == n)
            assert (a.received, b.received) == (2, 2)
            b.gate.set()  # B answers its two; A still holds two
            wait_for(lambda: sum(f.done() for f in held) == 2)
            assert [ask(model) for _ in range(2)] == ["Hello from B.", "Hello from B."]  # B has none in flight, A two
            assert (a.received, b.received) == (2, 4)
        finally:
            a.gate.set()
            b.gate.set()
        assert sorted(f.result() for f in held) == ["Hello from A."] * 2 + ["Hello from B."] * 2


def test_no_request_fails_when_a_server_dies_under_load(servers):
    a, b = servers("A", "B", delay=0.05)
    model = OpenAIChatModel([a.url, b.url], "tiny")
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(ask, model) for _ in range(30)]
        wait_for(lambda: sum(f.done() for f in futures) >= 8)
        a.kill()  # it holds requests it has not answered yet; they go to B
        replies = [f.result() for f in futures]  # raises if any failed
    assert set(replies) == {"Hello from A.", "Hello from B."}
    assert replies.count("Hello from B.") > 15 and a.received < 15
    assert model.pool.upstreams[0].down and not model.pool.upstreams[1].down


def test_a_5xx_before_the_first_token_moves_to_the_next_server(servers):
    a, b = servers("A", "B")
    a.status = 503
    model = OpenAIChatModel([a.url, b.url], "tiny")
    model.pool.probe_s = 60  # A answers /models; keep it down for this test
    assert [ask(model) for _ in range(3)] == ["Hello from B."] * 3
    assert a.received == 1  # tried once, then left alone while down


def test_a_server_that_dies_mid_reply_fails_that_reply_once(servers):
    a, b = servers("A", "B")
    a.cut_after = 2
    model = OpenAIChatModel([a.url, b.url], "tiny")
    seen = []
    with pytest.raises(ModelUnavailable, match="stopped in the middle of a reply") as info:
        for chunk in model.stream(HI, Options()):
            seen.append(chunk.text)
    assert "".join(seen) == "Hello from "  # nothing repeated, nothing from B
    assert b.received == 0 and "\n" not in str(info.value)
    assert ask(model) == "Hello from B."  # the next request goes elsewhere


def test_a_server_that_comes_back_takes_requests_again(servers):
    a, b = servers("A", "B")
    model = OpenAIChatModel([a.url, b.url], "tiny")
    model.pool.probe_s = 0.05
    a.kill()
    assert [ask(model) for _ in range(3)] == ["Hello from B."] * 3
    assert model.pool.upstreams[0].down and model.pool.prober is not None
    a.start()  # same port
    wait_for(lambda: not model.pool.upstreams[0].down)
    assert sorted(ask(model) for _ in range(2)) == ["Hello from A.", "Hello from B."]
    wait_for(lambda: model.pool.prober is None)  # the prober stops once all are up


def test_when_none_answers_one_line_names_them_all():
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    for attempt in (lambda: OpenAIChatModel(urls), lambda: ask(OpenAIChatModel(urls, "tiny"))):
        with pytest.raises(ModelUnavailable) as info:
            attempt()
        assert info.value.message == f"no model server answers: tried {urls[0]}, {urls[1]}"
        assert info.value.hint.startswith("start one or check openai_http.base_urls; the last said: cannot reach")
        assert "\n" not in str(info.value)


def test_one_server_keeps_its_own_error_and_starts_no_prober():
    url = f"http://127.0.0.1:{free_port()}/v1"
    for given in (url, [url]):
        model = OpenAIChatModel(given, "tiny")
        with pytest.raises(ModelUnavailable, match=f"cannot reach {url}") as info:
            ask(model)
        assert info.value.hint == "start the server, or fix openai_http.base_url"
        assert model.name == f"tiny@{url}" and model.pool.prober is None
        with pytest.raises(ModelUnavailable, match="cannot reach"):  # asked again: down or not, it is the only one
            ask(model)


def test_embeddings_fail_over_too(servers):
    a, b = servers("A", "B")
    embedder = OpenAIEmbedder([a.url, b.url], "tiny")
    assert embedder.dim == 2
    a.kill()
    assert {embedder.embed(["x", "y"])[0][0] for _ in range(3)} == {2.0}  # B's vectors


def test_non_streamed_replies_from_the_test_server(servers):
    (a,) = servers("A")
    reply = httpx.post(f"{a.url}/chat/completions", json={"model": "tiny", "messages": HI}).json()
    assert reply["choices"][0]["message"]["content"] == "Hello from A."


# --- config and privacy ---


def write_config(home, text):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text)


def test_one_base_url_is_read_as_before(anima_home):
    write_config(anima_home, '[openai_http]\nbase_url = "http://127.0.0.1:9000/v1"\n')
    s = load_config().openai_http
    assert (s.base_url, s.base_urls, s.urls) == ("http://127.0.0.1:9000/v1", [], ["http://127.0.0.1:9000/v1"])


def test_base_urls_from_the_file_and_the_environment(anima_home, monkeypatch):
    write_config(anima_home, '[openai_http]\nbase_urls = ["http://10.0.0.5:8000/v1", "http://10.0.0.6:8000/v1"]\n')
    s = load_config().openai_http
    assert s.urls == ["http://10.0.0.5:8000/v1", "http://10.0.0.6:8000/v1"]
    assert s.base_url == "http://10.0.0.5:8000/v1"  # what names one server (privacy checks, doctor) names the first
    monkeypatch.setenv("ANIMA_OPENAI_HTTP__BASE_URLS", "http://127.0.0.1:1/v1, http://127.0.0.1:2/v1")
    assert load_config().openai_http.urls == ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]


@pytest.mark.parametrize(
    "text, message",
    [
        ('[openai_http]\nbase_url = "http://a/v1"\nbase_urls = ["http://b/v1"]', "set base_url or base_urls, not both"),
        ('[openai_http]\nbase_urls = ["a:8000/v1"]', "not an http(s) URL: 'a:8000/v1'"),
    ],
)
def test_bad_base_urls_are_one_clear_error(anima_home, text, message):
    write_config(anima_home, text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        load_config()
    assert "\n" not in str(info.value)


def test_every_server_passes_the_privacy_rules():
    local, remote = "http://127.0.0.1:1/v1", "https://8.8.8.8/v1"
    config = load_config(backend="openai_http", openai_http={"base_urls": [local, remote]})
    with pytest.raises(ConfigError, match="8.8.8.8.*privacy.remote is off"):
        build(config).chat_model  # the second is remote too, not only base_url
    with pytest.raises(ConfigError, match="privacy.remote is off"):
        load_embedder(config.model_copy(update={"embedder": "remote"}))
    config = load_config(backend="openai_http", openai_http={"base_urls": [local, remote]}, privacy={"remote": True})
    with pytest.raises(ConfigError, match="mixes a server on this network"):
        load_chat_model(config)  # redaction is decided once for all of them: all local or all remote
    both_remote = {"base_urls": [remote, "https://1.1.1.1/v1"], "model": "m"}  # named: nothing asks the servers
    container = build(load_config(backend="openai_http", openai_http=both_remote, privacy={"remote": True}))
    assert container.redacts and container.chat_model.capabilities.remote == remote


def test_load_chat_model_takes_every_server(servers):
    a, b = servers("A", "B")
    model = load_chat_model(load_config(backend="openai_http", openai_http={"base_urls": [a.url, b.url]}))
    assert model.name == f"tiny@{a.url},{b.url}"
    assert sorted(ask(model) for _ in range(2)) == ["Hello from A.", "Hello from B."]


# --- two real llama_cpp.server processes (slow; `make test` runs it) ---


class _Watched(httpx.HTTPTransport):
    """A real transport that counts, per port, the replies whose body has begun (the first
    event of the stream is in: llama_cpp.server sends its headers at once, its events with
    the tokens) and not yet ended."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()
        self.open: collections.Counter[int] = collections.Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        port = request.url.port
        transport = self

        class Counted(httpx.SyncByteStream):
            begun = False

            def __iter__(self):
                for part in response.stream:
                    if not self.begun:
                        self.begun = True
                        with transport.lock:
                            transport.open[port] += 1
                    yield part

            def close(self):
                try:
                    response.stream.close()
                finally:
                    if self.begun:
                        with transport.lock:
                            transport.open[port] -= 1

        return httpx.Response(
            response.status_code, headers=response.headers, stream=Counted(), extensions=response.extensions
        )


@contextlib.contextmanager
def llama_cpp_server(model_path) -> Iterator[subprocess.Popen]:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path),
        "--model_alias",
        "small",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "512",
        "--n_threads",
        "1",
        "--n_threads_batch",
        "1",
        "--interrupt_requests",
        "false",
    ]  # the default lets a new request cut off the one streaming
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.url = f"http://127.0.0.1:{port}/v1"
    proc.port = port
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.mark.model
def test_two_llama_cpp_servers_one_killed_under_load_no_request_fails():
    from tests.conftest import real_model

    path = real_model("small")
    with llama_cpp_server(path) as first, llama_cpp_server(path) as second:
        deadline = time.monotonic() + 180
        for proc in (first, second):
            while True:
                try:
                    if httpx.get(f"{proc.url}/models", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, "llama_cpp.server did not start"
                time.sleep(0.5)
        watched = _Watched()
        model = OpenAIChatModel([first.url, second.url], "small", transport=watched)
        victim = model.pool.upstreams[1]
        # A long shared preamble: each server spends most of its time reading prompts (no reply begun),
        # the moment the kill below waits for; 24 requests keep both busy long enough to find it.
        preamble = "Read these notes first. " + " ".join(
            f"Note {i}: the meeting room {i} is on floor {i % 5}." for i in range(20)
        )
        questions = [
            f"{preamble}\n{q} (#{n})"
            for n in range(3)
            for q in [
                "What is the capital of France?",
                "Name a colour.",
                "Say hello.",
                "What is 2 + 2?",
                "Name a fruit.",
                "What day comes after Monday?",
                "Name an animal.",
                "What is water made of?",
            ]
        ]
        with ThreadPoolExecutor(len(questions)) as pool:
            options = Options(max_tokens=12, temperature=0)
            futures = [pool.submit(complete, model, [{"role": "user", "content": q}], options) for q in questions]
            next(as_completed(futures, timeout=600))  # in the middle: one answered, the rest in flight or queued
            # Kill the second server while it is reading a prompt, not streaming a reply: frozen, nothing
            # of a reply it has begun is still on its way, and it has requests in flight.
            while True:
                os.kill(second.pid, signal.SIGSTOP)
                time.sleep(0.3)
                with watched.lock:
                    quiet = watched.open[second.port] == 0 and victim.in_flight > 0
                if quiet:
                    os.kill(second.pid, signal.SIGKILL)
                    break
                os.kill(second.pid, signal.SIGCONT)
                assert not all(f.done() for f in futures), "the load ended before the second server could be killed"
                time.sleep(0.2)
            completions = [f.result(timeout=600) for f in futures]  # raises if any request failed
    assert all(c.text.strip() for c in completions)
    assert victim.down and not model.pool.upstreams[0].down
