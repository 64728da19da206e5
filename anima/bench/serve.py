"""`anima bench serve`: anima's server against llama-cpp-python's own, as users meet them.

Three servers, each in its own process, one at a time, on the same model, threads and
batch size:
- anima: `anima serve`, memory, guard and background learning on; every user's store
  holds one LoCoMo conversation (about 600 messages, ingested as episodes);
- reference: `llama_cpp.server` with its prompt cache on (`--cache True`,
  `--logits_all False`), sent what the clients send (the question);
- reference, anima's prompts: the same server sent the exact messages anima gave its
  model for each request (persona, recalled memories, the clock), which separates the
  cost of anima's pipeline from the cost of its longer prompts.
Each user asks their own conversation's questions, each once, a new conversation per
question, with think time between replies (seeded, the same on every server): the
same work on all three. Rounds interleave the servers (anima, exact, reference, then
again) on fresh copies of the stores; figures are per round and their mean and spread.
Learning runs in the think time as it would for real users (it waits for the server to
be quiet); what it did is reported. Each server is stopped before the next starts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx

from anima.bench import percentile
from anima.bench.served import (
    Home,
    StreamError,
    add_user,
    anima_cmd,
    content_deltas,
    free_port,
    new_home,
    run_cli,
    sse_events,
    start_anima,
    stop,
    wait_ready,
    warm_up,
)


def llama_cpp_server(
    model_path: Path,
    port: int,
    n_ctx: int,
    log: Path,
    threads: int | None = None,
    batch_threads: int | None = None,
    n_batch: int = 512,
) -> subprocess.Popen:
    """llama-cpp-python's OpenAI-compatible server on the same GGUF: the reference, with
    its own prompt cache on. Its output goes to `log`, so that a failed start can say why
    (and its cache hits can be counted)."""
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path),
        "--model_alias",
        "reference",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_batch",
        str(n_batch),
        "--interrupt_requests",
        "False",
        "--cache",
        "True",
        "--logits_all",
        "False",
        "--verbose",
        "True",
    ]
    if threads:
        cmd += ["--n_threads", str(threads), "--n_threads_batch", str(batch_threads or threads)]
    with log.open("wb") as sink:
        return subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)


SIDES = ("anima", "reference_exact", "reference")


@dataclass
class Record:
    user: int
    latency_ms: float | None = None
    first_token_ms: float | None = None
    tokens: int = 0
    prompt: list[dict] | None = None  # anima's: the messages its model was given
    error: str | None = None


def ask_all(
    base_url: str,
    model: str,
    keys: list[str],
    work: list[list],
    think: float,
    max_tokens: int,
    seed: int = 0,
    show_prompt: bool = False,
    done: Callable[[], None] = lambda: None,
    count: Callable[[str], int] | None = None,
) -> tuple[list[Record], float]:
    """Each user (a thread) sends its `work` items in order, one at a time, thinking
    between replies; an item is a question or a message list. Returns the records and
    the makespan in seconds. The think times come from `seed`, so every server gets
    the same schedule. `count`: tokens of the reply's text, the same tokenizer for every
    server (a server that streams several tokens per event, as anima's guarded stream
    does, is not undercounted); without it, one token per text event."""
    import random

    records: list[Record] = []
    lock = threading.Lock()
    started = time.monotonic()

    def user(u: int) -> None:
        rng = random.Random(seed * 1000 + u)
        http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {keys[u]}"}, timeout=httpx.Timeout(600.0, connect=5.0)
        )
        time.sleep(rng.uniform(0, think))  # users do not all start at once
        for item in work[u]:
            messages = [{"role": "user", "content": item}] if isinstance(item, str) else item
            body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
            if show_prompt:
                body["anima"] = {"show_prompt": True}
            rec, start = Record(u), time.perf_counter()
            try:
                with http.stream("POST", "/chat/completions", json=body) as r:
                    if r.status_code != 200:
                        r.read()
                        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:160]}")
                    text = []
                    for event in sse_events(r):
                        rec.prompt = rec.prompt or (event.get("anima") or {}).get("prompt")
                        n = content_deltas(event)
                        if n and rec.first_token_ms is None:
                            rec.first_token_ms = (time.perf_counter() - start) * 1000
                        rec.tokens += n
                        text += [(c.get("delta") or {}).get("content") or "" for c in event.get("choices") or []]
                    if count is not None:
                        rec.tokens = count("".join(text))
                rec.latency_ms = (time.perf_counter() - start) * 1000
            except (httpx.HTTPError, RuntimeError, StreamError, ValueError) as exc:
                rec.error = f"{type(exc).__name__}: {exc}"
            with lock:
                records.append(rec)
            done()
            time.sleep(rng.expovariate(1 / think) if think else 0)

    threads = [threading.Thread(target=user, args=(u,), daemon=True) for u in range(len(work))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records, time.monotonic() - started


def summarise(
    records: list[Record], makespan: float, prompt_tokens: list[int], restores: int | None, read: int | None = None
) -> dict:
    """`restores`: how often the server's prompt cache put a saved KV state back (anima's
    PromptCache hits; llama_cpp.server's "cache hit" lines); per request, since each
    server reuses its live context without counting it. `read`: prompt tokens the server
    actually read (what neither its live context nor a restore held): a prompt read
    twice, because another request's came between its guard vote and its reply, counts
    twice."""
    ok = [r for r in records if r.error is None]
    tokens = sum(r.tokens for r in ok)
    return {
        "requests": len(ok),
        "errors": len(records) - len(ok),
        "error_examples": [r.error for r in records if r.error][:3],
        "makespan_s": round(makespan, 1),
        "requests_per_s": round(len(ok) / makespan, 4),
        "tokens_per_s": round(tokens / makespan, 3),
        "first_token_p50_ms": percentile([r.first_token_ms for r in ok if r.first_token_ms is not None], 0.5),
        "first_token_p95_ms": percentile([r.first_token_ms for r in ok if r.first_token_ms is not None], 0.95),
        "latency_p50_ms": percentile([r.latency_ms for r in ok], 0.5),
        "latency_p95_ms": percentile([r.latency_ms for r in ok], 0.95),
        "prompt_tokens_mean": round(sum(prompt_tokens) / len(prompt_tokens), 1) if prompt_tokens else None,
        "cache_restores_per_request": round(restores / len(ok), 3) if restores is not None and ok else None,
        "prompt_tokens_read_per_request": round(read / len(ok), 1) if read is not None and ok else None,
    }


def tokens_read(log: str) -> int:
    """Prompt tokens a llama_cpp.server read, from its verbose timings (one line a completion)."""
    return sum(int(n) for n in re.findall(r"prompt eval time =\s*[\d.]+ ms /\s*(\d+) tokens", log))


def _spread(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "min": None, "max": None}
    return {"mean": round(sum(values) / len(values), 4), "min": min(values), "max": max(values)}


def prepare_home(path: Path, config, samples, data: Path, progress=None) -> tuple[Home, list[str]]:
    """A data dir for `anima serve`: the bench's config, one user per conversation, each
    store holding that conversation (ingested through the CLI, as a user would)."""
    home = new_home(path, config, passphrase="anima-bench")
    raw = {s["sample_id"]: s for s in json.loads(data.read_text(encoding="utf-8"))}
    keys = [add_user(home, "warmup")]  # keys[0]: warms the server up
    for u, sample in enumerate(samples):
        name = f"user{u}"
        keys.append(add_user(home, name))
        conv = path / f"{sample.sample_id}.json"
        conv.write_text(json.dumps([raw[sample.sample_id]]))
        run_cli(
            anima_cmd("memory", "ingest", str(conv)), {**home.env, "ANIMA_USER": name}, f"ingesting {sample.sample_id}"
        )
        conv.unlink()
        if progress:
            progress(u + 1, len(samples))
    return home, keys


def run_serve_bench(
    config,
    users: int = 4,
    questions: int = 5,
    think: float = 6.0,
    rounds: int = 3,
    max_tokens: int = 48,
    data: Path | None = None,
    progress: Callable[[str, float, float], None] | None = None,
) -> dict:
    """anima and the two references, interleaved `rounds` times (see the module doc)."""
    import shutil
    import tempfile

    from anima.bench.stores import conversations, default_data
    from anima.bench.stores import questions as questions_of
    from anima.models.llama_cpp import LlamaCppChatModel, cores
    from anima.models.registry import resolve

    data = data or default_data()
    samples = conversations(data, users)
    work = [questions_of(s, questions) for s in samples]
    path = resolve(config.model)
    tokenizer = LlamaCppChatModel(path, vocab_only=True)  # counts prompt tokens the same way for every server
    count = lambda messages: len(tokenizer.prompt_tokens(messages)[0])
    count_text = tokenizer.count_tokens
    # anima decodes on every core while nothing else wants one (LlamaCppChatModel._pace),
    # so the reference gets every core too (2 cores: 0.29 requests/s on 2 threads, 0.19 on
    # 1, 2026-12-06, one round each)
    threads = config.llama_cpp.n_threads or cores()
    batch_threads = config.llama_cpp.n_threads or os.cpu_count() or 1
    per_round: dict[str, list[dict]] = {side: [] for side in SIDES}
    learning: list[dict] = []
    total = rounds * len(SIDES) * users * questions
    finished = 0

    def tick() -> None:
        nonlocal finished
        finished += 1
        if progress:
            progress("requests", finished, total)

    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template"
        template_home, keys = prepare_home(
            template, config, samples, data, progress=lambda d, t: progress and progress("ingest", d, t)
        )
        for r in range(rounds):
            home = Path(tmp) / f"round{r}"
            shutil.copytree(template, home, symlinks=True)  # the models stay a link
            port, log = free_port(), home / "anima-serve.log"
            proc = start_anima(Home(home, {**template_home.env, "ANIMA_HOME": str(home)}), port, log, max_waiting=users)
            try:
                url = f"http://127.0.0.1:{port}"
                wait_ready(url + "/v1", proc=proc, log=log, what="anima serve")
                warm_up(url, keys[0], "assistant", open_stores=keys[1:])
                before = (httpx.get(url + "/api/health", timeout=10).json().get("prompt_cache") or {}).get(
                    "read_tokens"
                )
                records, makespan = ask_all(
                    url + "/v1",
                    "assistant",
                    keys=keys[1:],
                    work=work,
                    think=think,
                    max_tokens=max_tokens,
                    seed=r,
                    show_prompt=True,
                    done=tick,
                    count=count_text,
                )
                health = httpx.get(url + "/api/health", timeout=10).json()
            finally:
                stop(proc)
            cache = health.get("prompt_cache") or {}
            learning.append(health.get("learning") or {})
            anima_prompts = [[rec.prompt for rec in records if rec.user == u and rec.prompt] for u in range(users)]
            read = cache.get("read_tokens")
            per_round["anima"].append(
                summarise(
                    records,
                    makespan,
                    [count(p) for ps in anima_prompts for p in ps],
                    cache.get("hits"),
                    read - before if read is not None and before is not None else None,
                )
            )
            for side, side_work in (("reference_exact", anima_prompts), ("reference", work)):
                port, log = free_port(), home / f"{side}.log"
                proc = llama_cpp_server(
                    path,
                    port,
                    n_ctx=config.llama_cpp.n_ctx,
                    log=log,
                    threads=threads,
                    batch_threads=batch_threads,
                    n_batch=config.llama_cpp.n_batch,
                )
                try:
                    wait_ready(f"http://127.0.0.1:{port}/v1", proc=proc, log=log)
                    warm_up(f"http://127.0.0.1:{port}", "none", "reference")
                    warmed = len(log.read_text(errors="replace"))
                    records, makespan = ask_all(
                        f"http://127.0.0.1:{port}/v1",
                        "reference",
                        keys=["none"] * users,
                        work=side_work,
                        think=think,
                        max_tokens=max_tokens,
                        seed=r,
                        done=tick,
                        count=count_text,
                    )
                finally:
                    stop(proc)
                said = log.read_text(errors="replace")
                sent = [
                    item if isinstance(item, list) else [{"role": "user", "content": item}]
                    for items in side_work
                    for item in items
                ]
                per_round[side].append(
                    summarise(
                        records,
                        makespan,
                        [count(m) for m in sent],
                        said.count("_create_completion: cache hit"),
                        tokens_read(said[warmed:]),
                    )
                )

    keys = (
        "requests_per_s",
        "tokens_per_s",
        "first_token_p50_ms",
        "first_token_p95_ms",
        "latency_p50_ms",
        "latency_p95_ms",
        "prompt_tokens_mean",
        "cache_restores_per_request",
        "prompt_tokens_read_per_request",
    )
    sides = {
        side: {"rounds": rows, **{key: _spread([r[key] for r in rows if r.get(key) is not None]) for key in keys}}
        for side, rows in per_round.items()
    }
    ratios = {
        f"anima/{ref}": {
            name: _spread(
                [a[key] / b[key] for a, b in zip(per_round["anima"], per_round[ref]) if a[key] is not None and b[key]]
            )
            for name, key in (
                ("requests_per_s", "requests_per_s"),
                ("tokens_per_s", "tokens_per_s"),
                ("first_token_p50", "first_token_p50_ms"),
            )
        }
        for ref in ("reference", "reference_exact")
    }
    return {
        "model": config.model,
        "users": users,
        "questions_per_user": questions,
        "think_s": think,
        "rounds": rounds,
        "max_tokens": max_tokens,
        "conversations": [s.sample_id for s in samples],
        "threads": threads,
        "batch_threads": batch_threads,
        "n_batch": config.llama_cpp.n_batch,
        "memory": "on" if config.memory.enabled else "off",
        "guard": f"on (LLM layer {config.guard.layer2})" if config.guard.enabled else "off",
        "learning": learning,
        "sides": sides,
        "ratios": ratios,
    }
