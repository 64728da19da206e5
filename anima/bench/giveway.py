"""`anima bench give-way`: how long a request waits for the model while the learner works.

The issue's bar: learning runs in idle time "without delaying a request by more than one
decode step". One process, one loaded model, a real `Learner` on an encrypted store,
learning from a LoCoMo conversation's messages one at a time, as it does after chat
turns. While it works, requests come at seeded random moments (uniform in
[`min_gap`, `max_gap`] seconds after the learner was let go), each a distinct question
of that conversation with the default persona:

- give-way: from the request's arrival to the model being free for it (its lock taken),
  with what the learner was doing at that moment (reading its prompt, writing, or
  between model calls);
- the request's first token with the learner working, against the same request right
  after with the learner held (the reference: an idle model). Both read their prompt
  from an empty KV cache, so neither side reuses the other's work;
- one decode step: the reference request's time per generated token after the first.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from anima.assistant import get_persona
from anima.bench import percentile
from anima.bench.stores import BENCH_KEY, conversations, questions
from anima.config import Config
from anima.memory import MemoryService
from anima.memory.extract import SYSTEM
from anima.memory.service import Learner
from anima.models import load_chat_model, load_embedder
from anima.models.base import Options, complete
from anima.models.llama_cpp import LlamaCppChatModel
from anima.store import Store

SEED = 7


def _stats(values: list[float]) -> dict:
    return {
        "p50": percentile(values, 0.5),
        "p95": percentile(values, 0.95),
        "max": round(max(values), 1) if values else None,
        "mean": round(statistics.fmean(values), 1) if values else None,
    }


def run_giveway(
    config: Config,
    n_requests: int = 20,
    min_gap: float = 0.5,
    max_gap: float = 10.0,
    max_tokens: int = 16,
    data: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    model = load_chat_model(config)
    assert isinstance(model, LlamaCppChatModel), "this bench times the embedded model (backend llama_cpp)"
    embedder = load_embedder(config)
    persona = get_persona(config.persona)
    (sample,) = conversations(data, 1)
    asked = questions(sample, n_requests)
    if len(asked) < n_requests:
        asked = (asked * n_requests)[:n_requests]
    rng = random.Random(SEED)
    gaps = [rng.uniform(min_gap, max_gap) for _ in asked]

    phase = {"now": "between model calls"}  # what the learner's model is doing
    inner = model.llm.eval

    def tracked(tokens):  # create_completion reads its prompt, then one token per step
        phase["now"] = "reading its prompt" if len(tokens) > 1 else "writing"
        try:
            return inner(tokens)
        finally:
            phase["now"] = "between model calls"

    model.llm.eval = tracked

    # The learner's own saved prompts stay in the prompt cache, as in a server (its long
    # instructions are not read again for every message); a request's are dropped, so
    # both sides of a comparison read the request's prompt from scratch.
    learner_head = tuple(model.prompt_tokens([{"role": "system", "content": SYSTEM}])[0][:32])

    def clear() -> None:
        model.llm.reset()
        for key in [k for k in model.cache.entries if k[:32] != learner_head]:
            del model.cache.entries[key]

    def request(question: str) -> tuple[float, float, int]:
        """First token (ms from the call) and total ms of one request, and its tokens."""
        messages = [{"role": "system", "content": persona.system_prompt}, {"role": "user", "content": question}]
        start = time.perf_counter()
        reply = complete(model, messages, Options(max_tokens=max_tokens, temperature=0.0))
        return reply.first_token_ms or 0.0, (time.perf_counter() - start) * 1000, reply.usage.completion_tokens

    busy = threading.Event()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "giveway.db", BENCH_KEY)
        memory = MemoryService(store, embedder, model)
        learner = Learner(memory, idle=lambda: not busy.is_set(), busy=busy.is_set, poll=0.05)
        busy.set()  # held until the first request's gap starts
        start = datetime(2023, 5, 8, 13, 0, tzinfo=timezone.utc)
        for n, turn in enumerate(sample.turns):
            when = start + timedelta(minutes=n)
            eid = memory.observe(turn.text, "user", turn.speaker, when)
            learner.submit(eid, turn.text, when, turn.speaker)
        request("Hello")  # warm-up: page the weights in
        for i, (question, gap) in enumerate(zip(asked, gaps)):
            clear()
            busy.clear()  # the learner may work
            time.sleep(gap)
            doing = phase["now"] if model.lock.locked() else "between model calls"
            busy.set()  # a request arrives
            arrived = time.perf_counter()
            with model.lock:
                waited = (time.perf_counter() - arrived) * 1000
                clear()
            first, total, _ = request(question)
            first_busy = (time.perf_counter() - arrived) * 1000 - total + first
            clear()
            first_idle, total_idle, tokens = request(question)  # the learner is held: an idle model
            step = (total_idle - first_idle) / (tokens - 1) if tokens > 1 else None
            rows.append(
                {
                    "phase": doing,
                    "give_way_ms": waited,
                    "first_busy": first_busy,
                    "first_idle": first_idle,
                    "step": step,
                }
            )
            if progress:
                progress("requests", i + 1, len(asked))
        learner.stop(wait=60)
        learned, preempted = learner.done, learner.preempted
        store.close()

    steps = [r["step"] for r in rows if r["step"] is not None]
    by_phase: dict[str, dict] = {}
    for r in rows:
        by_phase.setdefault(r["phase"], []).append(r["give_way_ms"])
    give_way = [r["give_way_ms"] for r in rows]
    step_p50 = percentile(steps, 0.5)
    return {
        "bench": "give-way",
        "model": config.model,
        "conversation": sample.sample_id,
        "requests": len(rows),
        "seed": SEED,
        "gap_s": [min_gap, max_gap],
        "max_tokens": max_tokens,
        "give_way_ms": _stats(give_way),
        "give_way_ms_by_phase": {k: {"n": len(v), **_stats(v)} for k, v in sorted(by_phase.items())},
        "first_token_ms": {
            "learner working": _stats([r["first_busy"] for r in rows]),
            "idle model": _stats([r["first_idle"] for r in rows]),
        },
        "decode_step_ms": _stats(steps),
        "within_one_step": sum(1 for g in give_way if step_p50 is not None and g <= step_p50),
        "learned_messages": learned,
        "learner_gave_way": preempted,
    }
