"""`anima bench overhead`: what anima's turn pipeline costs on top of raw llama.cpp.

One process, one loaded model. For each prompt, (a) llama-cpp-python's own
`create_chat_completion(stream=True)` on exactly the messages anima sends, and
(b) `Assistant.reply()` as `anima ask` runs it: persona, memory recall (embedding
the question, hybrid search), streaming, logging the turn and keeping both messages
as episodes in a real encrypted SQLite file. Each anima call starts from an empty
memory (a fresh store, made before the clock starts); background learning is off,
since it runs after the reply. Greedy decoding and the same max_tokens on both
sides; the KV cache is cleared before every call so neither side reuses the other's
work; the order alternates to cancel drift. Tokens are counted the same way on both
sides (the reply re-tokenised).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from anima.app import build
from anima.assistant import get_persona
from anima.config import Config
from anima.models import load_embedder
from anima.models.llama_cpp import LlamaCppChatModel
from anima.models.registry import resolve
from anima.store import Key, Store

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


def run_overhead(config: Config, n_prompts: int = 8, max_tokens: int = 64, rounds: int = 2, progress: Callable[[int, int], None] | None = None) -> dict:
    model = LlamaCppChatModel(resolve(config.model), name=config.model, n_ctx=config.llama_cpp.n_ctx, n_threads=config.llama_cpp.n_threads, n_batch=config.llama_cpp.n_batch)
    embedder = load_embedder(config)
    prompts = (PROMPTS * (n_prompts // len(PROMPTS) + 1))[:n_prompts]
    persona = get_persona(config.persona)
    config.memory.learn = False
    with tempfile.TemporaryDirectory() as tmp:
        stores = iter(range(10**6))

        def fresh_assistant():
            key = Key("bench", raw=False, source="bench")
            return build(config, chat_model=model, store=Store(Path(tmp) / f"{next(stores)}.db", key), embedder=embedder).assistant

        def raw(prompt: str) -> tuple[float, float | None, int]:
            assistant = fresh_assistant()
            messages = assistant.prompt(persona, assistant.store.new_conversation(persona.name), prompt)
            model.llm.reset()
            start, first, parts = time.perf_counter(), None, []
            for event in model.llm.create_chat_completion(messages, max_tokens=max_tokens, temperature=0.0, stream=True):
                text = event["choices"][0]["delta"].get("content")
                if text:
                    first = first or time.perf_counter() - start
                    parts.append(text)
            return time.perf_counter() - start, first, model.count_tokens("".join(parts))

        def ours(prompt: str) -> tuple[float, float | None, int]:
            assistant = fresh_assistant()
            options = assistant.options(max_tokens=max_tokens, temperature=0.0)
            model.llm.reset()
            start = time.perf_counter()
            reply = assistant.reply(prompt, persona=persona.name, options=options)
            reply.text()
            elapsed = time.perf_counter() - start
            assistant.store.close()
            first = reply.turn.first_token_ms / 1000 if reply.turn.first_token_ms else None
            return elapsed, first, reply.turn.completion_tokens

        ours(prompts[0]), raw(prompts[0])  # warm-up: page the weights in, build caches
        sides = {"raw": raw, "anima": ours}
        samples: dict[str, list[tuple[float, float | None, int]]] = {"raw": [], "anima": []}
        total, done = 2 * rounds * len(prompts), 0
        for r in range(rounds):
            for i, prompt in enumerate(prompts):
                order = ("raw", "anima") if (r + i) % 2 == 0 else ("anima", "raw")
                for side in order:
                    samples[side].append(sides[side](prompt))
                    done += 1
                    if progress:
                        progress(done, total)

    guard = "off" if not config.guard.enabled else f"on (input and output, LLM layer {config.guard.layer2})"
    result = {"model": config.model, "memory": "on, empty, learning off", "guard": guard, "prompts": len(prompts), "rounds": rounds, "max_tokens": max_tokens}
    for side, rows in samples.items():
        wall = sum(w for w, _, _ in rows)
        tokens = sum(t for _, _, t in rows)
        firsts = [f * 1000 for _, f, _ in rows if f is not None]
        result[side] = {
            "wall_s": round(wall, 3),
            "completion_tokens": tokens,
            "tokens_per_s": round(tokens / wall, 3),
            "first_token_p50_ms": round(statistics.median(firsts), 1) if firsts else None,
        }
    result["ratio"] = round(result["anima"]["tokens_per_s"] / result["raw"]["tokens_per_s"], 4)
    return result
