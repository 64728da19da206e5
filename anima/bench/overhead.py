"""`anima bench overhead`: what anima's turn pipeline costs on top of raw llama.cpp.

One process, one loaded model. For each prompt, (a) llama-cpp-python's own
`create_chat_completion(stream=True)` on the persona and the question, as a user of
the bare model would send them, and (b) `Assistant.reply()` as `anima ask` runs it:
input guard, memory recall (embedding the question, hybrid search), streaming, output
guard, logging the turn and keeping both messages as episodes in a real encrypted
SQLite file. Both clocks start when the call is made, so anima's first token includes
the guard and recall.

Two stores on anima's side, each call on a fresh copy made before the clock starts:
- empty: a new user;
- one conversation: a LoCoMo conversation ingested as episodes (about 600 messages),
  asked that conversation's own questions, each once (recall has real work to do and
  the prompt carries what it found).
Background learning is off (it runs after the reply). Greedy decoding, the same
max_tokens on both sides; before every call the KV cache is cleared and anima's
PromptCache emptied, so neither side reuses earlier work; the order alternates to
cancel drift. Tokens are counted the same way on both sides (the reply re-tokenised).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from anima.app import build
from anima.assistant import get_persona
from anima.bench import percentile
from anima.bench.stores import BENCH_KEY, conversations, copy_store, fill, questions
from anima.config import Config
from anima.models import load_chat_model, load_embedder
from anima.models.llama_cpp import LlamaCppChatModel
from anima.store import Store

PROMPTS = [
    "What is the capital of France?",
    "Explain what a hash map is in two sentences.",
    "Write a haiku about autumn rain.",
    "Give three tips for sleeping better.",
    "How do I reverse a list in Python?",
    "Summarise the plot of Romeo and Juliet briefly.",
    "What is the difference between weather and climate?",
    "Suggest a name for a small bakery.",
    "Why is the sky blue?",
    "List four vegetables that grow well in spring.",
]

Timing = tuple[float, float | None, int, int]  # wall s, first token s, completion tokens, prompt tokens


def run_overhead(
    config: Config,
    n_prompts: int = 8,
    max_tokens: int = 64,
    rounds: int = 2,
    data: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    model = load_chat_model(config)
    assert isinstance(model, LlamaCppChatModel), "this bench times the embedded model (backend llama_cpp)"
    embedder = load_embedder(config)
    persona = get_persona(config.persona)
    config.memory.learn = False
    (sample,) = conversations(data, 1)
    asked = questions(sample, n_prompts)
    scenarios = {
        "empty store": (None, (PROMPTS * (n_prompts // len(PROMPTS) + 1))[:n_prompts]),
        f"one conversation ({sample.sample_id})": (sample, asked),
    }
    with tempfile.TemporaryDirectory() as tmp:
        copies = iter(range(10**6))
        templates: dict[str, Path | None] = {}
        for name, (conv, _) in scenarios.items():
            templates[name] = None
            if conv is not None:
                templates[name] = Path(tmp) / f"{conv.sample_id}.template.db"
                fill(
                    templates[name],
                    conv,
                    embedder,
                    progress=lambda d, t: progress and progress(f"ingest {conv.sample_id}", d, t),
                )

        def fresh_assistant(template: Path | None):
            path = Path(tmp) / f"{next(copies)}.db"
            store = copy_store(template, path) if template else Store(path, BENCH_KEY)
            return build(config, chat_model=model, store=store, embedder=embedder).assistant

        def clear() -> None:
            model.llm.reset()
            model.cache.entries.clear()

        def raw(prompt: str, template: Path | None) -> Timing:
            messages = [{"role": "system", "content": persona.system_prompt}, {"role": "user", "content": prompt}]
            n_prompt = len(model.prompt_tokens(messages)[0])
            clear()
            start, first, parts = time.perf_counter(), None, []
            for event in model.llm.create_chat_completion(
                messages, max_tokens=max_tokens, temperature=0.0, stream=True
            ):
                text = event["choices"][0]["delta"].get("content")
                if text:
                    first = first or time.perf_counter() - start
                    parts.append(text)
            return time.perf_counter() - start, first, model.count_tokens("".join(parts)), n_prompt

        def ours(prompt: str, template: Path | None) -> Timing:
            assistant = fresh_assistant(template)
            options = assistant.options(max_tokens=max_tokens, temperature=0.0)
            clear()
            start = time.perf_counter()
            reply = assistant.reply(prompt, persona=persona.name, options=options)
            reply.text()
            elapsed = time.perf_counter() - start
            assistant.store.close()
            t = reply.turn
            return (
                elapsed,
                (t.first_token_ms / 1000 if t.first_token_ms else None),
                t.completion_tokens,
                t.prompt_tokens,
            )

        sides = {"raw": raw, "anima": ours}
        ours(PROMPTS[0], None), raw(PROMPTS[0], None)  # warm-up: page the weights in, build caches
        results = {}
        for name, (_, prompts) in scenarios.items():
            samples: dict[str, list[Timing]] = {"raw": [], "anima": []}
            total, done = 2 * rounds * len(prompts), 0
            for r in range(rounds):
                for i, prompt in enumerate(prompts):
                    for side in ("raw", "anima") if (r + i) % 2 == 0 else ("anima", "raw"):
                        samples[side].append(sides[side](prompt, templates[name]))
                        done += 1
                        if progress:
                            progress(name, done, total)
            results[name] = _summary(samples, len(prompts))

    guard = "off" if not config.guard.enabled else f"on (input and output, LLM layer {config.guard.layer2})"
    return {
        "model": config.model,
        "memory": "on, learning off",
        "guard": guard,
        "prompts": n_prompts,
        "rounds": rounds,
        "max_tokens": max_tokens,
        "timing": "from the call to the last token; anima's includes guard and recall",
        "cache": "KV cache and PromptCache cleared before every call",
        "scenarios": results,
    }


def _summary(samples: dict[str, list[Timing]], n_prompts: int) -> dict:
    out: dict = {"prompts": n_prompts}
    for side, rows in samples.items():
        wall = sum(w for w, _, _, _ in rows)
        tokens = sum(t for _, _, t, _ in rows)
        firsts = [f * 1000 for _, f, _, _ in rows if f is not None]
        out[side] = {
            "wall_s": round(wall, 3),
            "completion_tokens": tokens,
            "tokens_per_s": round(tokens / wall, 3),
            "first_token_p50_ms": round(statistics.median(firsts), 1) if firsts else None,
            "first_token_p95_ms": percentile(firsts, 0.95),
            "prompt_tokens_mean": round(statistics.mean(p for _, _, _, p in rows), 1),
        }
    out["ratio"] = round(out["anima"]["tokens_per_s"] / out["raw"]["tokens_per_s"], 4)
    return out
