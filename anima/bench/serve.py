"""`anima bench serve`: anima's server vs llama-cpp-python's own, same model, same load.

`load()` is a bounded load generator: N clients on threads, each sending chat
completions back to back (streamed, as chat UIs do) for T seconds, then stopping.
It counts requests, completion tokens (content deltas), latency, and errors,
with 429s (a full queue, by design) apart from real errors.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx

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


def load(base_url: str, model: str, clients: int, duration: float, api_key: str = "none", max_tokens: int = 32, progress: Callable[[float], None] | None = None) -> LoadResult:
    """Run `clients` streaming clients against `base_url` (…/v1) for `duration` seconds."""
    result, lock = LoadResult(clients, duration), threading.Lock()
    started = time.monotonic()
    stop_at = started + duration

    def client(n: int) -> None:
        http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=httpx.Timeout(300.0, connect=5.0))
        i = n
        while time.monotonic() < stop_at:
            body = {"model": model, "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], "max_tokens": max_tokens,
                    "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
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
                    for line in r.iter_lines():
                        if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
                            event = json.loads(line[5:])
                            if "error" in event:
                                raise RuntimeError(str(event["error"])[:120])
                            # one content delta per generated token on both servers (llama-cpp-python's
                            # server sends no usage when streaming), so both are counted the same way
                            tokens += sum(1 for c in event.get("choices") or [] if (c.get("delta") or {}).get("content"))
            except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                with lock:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                result.latencies_ms.append((time.perf_counter() - start) * 1000)
                result.tokens += tokens

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if progress:
            progress(min(duration, time.monotonic() - started))
        time.sleep(0.5)
    result.duration_s = time.monotonic() - started  # requests in flight at the deadline finish, and count
    return result


def wait_ready(url: str, timeout: float = 180.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(url + "/models", timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


def llama_cpp_server(model_path: Path, port: int, n_ctx: int) -> subprocess.Popen:
    """llama-cpp-python's OpenAI-compatible server on the same GGUF: the reference."""
    return subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--model_alias", "reference", "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", str(n_ctx), "--interrupt_requests", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def run_serve_bench(config, clients: int, duration: float, max_tokens: int = 32, progress: Callable[[str, float, float], None] | None = None) -> dict:
    """The same load against anima (memory on, in this process) and llama-cpp-python's
    server (a subprocess), one after the other on the same machine and model."""
    import tempfile

    import uvicorn

    from anima.app import build
    from anima.models.registry import resolve
    from anima.server import Server, create_app
    from anima.store.accounts import Accounts

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        container = build(config)  # the models; the bench's stores live in `tmp`, not in the user's data
        server = Server(config, Accounts(Path(tmp) / "accounts.db"), container.chat_model, container.embedder, container.learner_model, max_waiting=clients, data_dir=Path(tmp), guard=container.guard)
        port = _free_port()
        uv = uvicorn.Server(uvicorn.Config(create_app(server), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=uv.run, daemon=True)
        thread.start()
        try:
            wait_ready(f"http://127.0.0.1:{port}/v1")
            load(f"http://127.0.0.1:{port}/v1", "assistant", 1, 1, max_tokens=4)  # warm-up
            results["anima"] = load(f"http://127.0.0.1:{port}/v1", "assistant", clients, duration, max_tokens=max_tokens,
                                    progress=lambda t: progress and progress("anima", t, duration)).summary()
        finally:
            uv.should_exit = True
            thread.join(30)
            server.stop_learning()  # queued learning must not eat into the reference's run
        del container, server  # free the model before the reference loads its own copy
    port = _free_port()
    proc = llama_cpp_server(resolve(config.model), port, config.llama_cpp.n_ctx)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1", proc=proc)
        load(f"http://127.0.0.1:{port}/v1", "reference", 1, 1, max_tokens=4)
        results["llama_cpp_server"] = load(f"http://127.0.0.1:{port}/v1", "reference", clients, duration, max_tokens=max_tokens,
                                           progress=lambda t: progress and progress("llama_cpp.server", t, duration)).summary()
    finally:
        proc.terminate()
        proc.wait(30)
    ref = results["llama_cpp_server"]["tokens_per_s"]
    results["throughput_ratio"] = round(results["anima"]["tokens_per_s"] / ref, 3) if ref else None
    results["model"], results["max_tokens"] = config.model, max_tokens
    results["memory"] = "on" if config.memory.enabled else "off"
    results["guard"] = f"on (LLM layer {config.guard.layer2})" if config.guard.enabled else "off"
    return results


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
