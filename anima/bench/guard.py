"""`anima bench guard`: what the guard adds to a turn, measured in the turn.

One process, one model's weights (the chat's context, and the LLM layer's own context
as `anima serve` has it), a new empty store for every call, learning off. Each
prompt is answered twice by `Assistant.reply()` as `anima ask` runs it: with the guard
off, and with it on as configured (fast layer, the LLM layer where the fast layer is
unsure, the refusal vote on the reply's own prompt, the streamed reply held back and
checked piece by piece, the full check at the end). Greedy decoding and the same
max_tokens on both sides, so a reply the guard lets through is the same reply; before
every call the KV caches and the PromptCaches are cleared, but for the LLM layer's fixed
instruction, which a server reads once and keeps; the order alternates. The
guard's cost is the difference per prompt: to the first piece shown, and to the end of
the reply (a blocked prompt: to its refusal, against the unguarded reply's end).
With `repeats` > 1 each side is run that many times, alternating, and its median time
is the side's: one run of a row moves by up to a second and a half from run to run on
2 cores (thread scheduling, the CPU's speed), which a p95 over a few dozen rows is
mostly made of.

Prompts: chat-length rows (at most `max_chars`) of the public safety sets' test split,
which the guard never trained on, harmful and benign, in a fixed order (by a hash).
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from anima.app import build
from anima.bench import percentile
from anima.bench.stores import BENCH_KEY
from anima.config import Config
from anima.errors import BadInput, ModelNotFound
from anima.models import load_chat_model, load_embedder
from anima.models.llama_cpp import LlamaCppChatModel
from anima.safety.data import held_out
from anima.store import Store


def prompts(folder: Path, n: int, max_chars: int) -> list[tuple[str, bool]]:
    """`n` test-split rows, half benign and half harmful: (text, harmful)."""
    rows = [e for e in held_out(folder) if len(e.text.strip()) <= max_chars]
    rows.sort(key=lambda e: hashlib.sha1(e.text.encode("utf-8", "surrogatepass")).hexdigest())
    harmful = [(e.text, True) for e in rows if e.unsafe][: n // 2]
    benign = [(e.text, False) for e in rows if not e.unsafe][: n - len(harmful)]
    return [p for pair in zip(benign, harmful) for p in pair] + benign[len(harmful) :] + harmful[len(benign) :]


def run_guard_cost(
    config: Config,
    folder: Path,
    n_prompts: int = 40,
    max_tokens: int = 48,
    max_chars: int = 500,
    repeats: int = 1,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    model = load_chat_model(config)
    assert isinstance(model, LlamaCppChatModel), "this bench times the embedded model (backend llama_cpp)"
    # the LLM layer in a context of its own, as `anima serve` runs it (the learner's)
    judge = load_chat_model(config)
    embedder = load_embedder(config)
    config.memory.learn = False
    on = config.model_copy(update={"guard": config.guard.model_copy(update={"enabled": True})}, deep=True)
    off = config.model_copy(update={"guard": config.guard.model_copy(update={"enabled": False})}, deep=True)
    guard = build(on, chat_model=model, embedder=embedder, learner_model=judge).guard
    # where the LLM layer runs: that context, or a model of its own (`guard.llm_model`);
    # None when it is not embedded (a remote model keeps no cache here)
    llm_ctx = guard.llm.model if guard is not None and guard.llm is not None else judge
    llm_ctx = llm_ctx if isinstance(llm_ctx, LlamaCppChatModel) else None
    chosen = prompts(folder, n_prompts, max_chars)

    with tempfile.TemporaryDirectory() as tmp:
        calls = iter(range(10**6))

        def turn(text: str, guarded: bool) -> dict:
            store = Store(Path(tmp) / f"{next(calls)}.db", BENCH_KEY)
            container = build(
                on if guarded else off,
                chat_model=model,
                store=store,
                embedder=embedder,
                guard=guard if guarded else None,
            )
            assistant = container.assistant
            options = assistant.options(max_tokens=max_tokens, temperature=0.0)
            for m in (model, judge, llm_ctx):  # llm_ctx is often judge: clearing twice is harmless
                if m is not None:
                    m.llm.reset()
                    m.cache.entries.clear()
            model._states.clear()  # the probe's kept states too
            if llm_ctx is not None:
                llm_ctx.cache.entries.update(instruction)
            start = time.perf_counter()
            reply = assistant.reply(text, options=options)
            first, parts = None, []
            for piece in reply:
                first = first or time.perf_counter() - start
                parts.append(piece)
            end = time.perf_counter() - start
            store.close()
            verdict = reply.verdicts.get("input")
            return {
                "first_ms": (first or end) * 1000,
                "end_ms": end * 1000,
                "blocked": reply.turn.status == "blocked",
                "layers": dict(verdict.layers_ms) if verdict is not None else {},
            }

        # A server's judge context holds the LLM layer's fixed instruction from its first
        # judgement on (`first_token_logits` keeps it): every call starts from that, and
        # from nothing else of an earlier call.
        instruction: dict = {}
        if guard is not None and guard.llm is not None:
            guard.llm.score("What is the capital of France?")
            instruction = dict(llm_ctx.cache.entries) if llm_ctx is not None else {}
        turn("What is the capital of France?", True), turn("What is the capital of France?", False)  # warm-up
        rows, total, done = [], 2 * repeats * len(chosen), iter(range(1, 10**6))
        for i, (text, harmful) in enumerate(chosen):
            runs: dict[bool, list[dict]] = {True: [], False: []}
            for r in range(repeats):
                for guarded in (True, False) if (i + r) % 2 == 0 else (False, True):
                    runs[guarded].append(turn(text, guarded))
                    if progress:
                        progress("guard on / off", next(done), total)
            rows.append({"harmful": harmful, "on": _median_run(runs[True]), "off": _median_run(runs[False])})

    groups = {"benign": [r for r in rows if not r["harmful"]], "harmful": [r for r in rows if r["harmful"]]}
    groups["all"] = rows
    return {
        "model": config.model,
        "guard": f"layer2 {config.guard.layer2}, refusal vote {'on' if guard and guard.refusal_model else 'off'}",
        "llm_layer_kept_tokens": max((len(k) for k in instruction), default=0),
        "prompts": len(rows),
        "repeats": repeats,
        "max_tokens": max_tokens,
        "split": f"test split of the public safety sets (never trained on), rows of at most {max_chars} characters",
        "timing": (
            "from reply() to the first piece shown / to the end; greedy, caches cleared before each call"
            " (the LLM layer's context keeps its fixed instruction, as a server's does)"
            + (f"; each side the median of {repeats} runs" if repeats > 1 else "")
        ),
        "groups": {name: _summary(g) for name, g in groups.items() if g},
        "rows": [
            {
                "text": text[:80],
                "harmful": r["harmful"],
                "blocked": r["on"]["blocked"],
                "added_first_ms": round(r["on"]["first_ms"] - r["off"]["first_ms"], 1),
                "added_end_ms": round(r["on"]["end_ms"] - r["off"]["end_ms"], 1),
                "layers_ms": {k: round(v, 1) for k, v in r["on"]["layers"].items()},
            }
            for (text, _), r in zip(chosen, rows)
        ],
    }


def _median_run(runs: list[dict]) -> dict:
    """One side of a row: the median of its runs' times (the verdict is the same in every
    run: greedy decoding, the same caches)."""
    median = lambda key: statistics.median(r[key] for r in runs)
    return runs[0] | {"first_ms": median("first_ms"), "end_ms": median("end_ms")}


def _summary(rows: list[dict]) -> dict:
    def ms(values: list[float]) -> dict:
        return {
            "p50": round(statistics.median(values), 1) if values else None,
            "p95": percentile(values, 0.95),
            "max": round(max(values), 1) if values else None,
        }

    layer = lambda name: [r["on"]["layers"][name] for r in rows if name in r["on"]["layers"]]
    return {
        "n": len(rows),
        "blocked": sum(r["on"]["blocked"] for r in rows),
        "first_off_ms": ms([r["off"]["first_ms"] for r in rows]),
        "first_on_ms": ms([r["on"]["first_ms"] for r in rows]),
        "added_first_ms": ms([r["on"]["first_ms"] - r["off"]["first_ms"] for r in rows]),
        "added_end_ms": ms([r["on"]["end_ms"] - r["off"]["end_ms"] for r in rows]),
        "fast_layer_ms": ms(layer("classifier")),
        "llm_layer_ms": ms(layer("llm")),
        "refusal_vote_ms": ms(layer("refusal")),
    }


BANDS = ((0, 160), (160, 320), (320, 400), (400, 500))


def run_fast_layer(
    config: Config,
    folder: Path,
    max_chars: int = 500,
    passes: int = 2,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """The fast layer alone (`guard.check_fast`: rules, the injection score, the head on
    a message and its pieces) over the test split's rows of at most `max_chars`, `passes`
    times, p50 / p95 by the message's length. Beside it, on the same rows, the sentence
    embeddings the head asks for, from the guard's embedder (ONNX Runtime, int8) and from
    llama.cpp's MiniLM (what memory uses, and the guard did before): the layer's cost."""
    from anima.models.llama_cpp import LlamaCppEmbedder
    from anima.models.onnx_embed import OnnxEmbedder
    from anima.safety.classifier import embed_start

    fast = {"enabled": True, "layer2": "off", "votes": False}  # no chat model: the fast layer alone
    container = build(config.model_copy(update={"guard": config.guard.model_copy(update=fast)}))
    guard = container.guard
    if guard is None or guard.head is None:
        raise ModelNotFound("the guard's heads are not trained", "run `anima guard train`")
    texts = [e.text for e in held_out(folder) if len(e.text.strip()) <= max_chars]
    if not isinstance(container.guard_embedder, OnnxEmbedder):
        raise BadInput("this bench times the guard's local embedder", "run it with backend = llama_cpp")
    reference = LlamaCppEmbedder(container.guard_embedder.path, n_threads=config.llama_cpp.n_threads)
    embedders = {"guard's (ONNX Runtime, int8)": guard.embed, "llama.cpp (F16)": reference.embed}
    for text in texts[:20]:  # warm-up
        guard.check_fast(text)
    timed: dict[str, list[tuple[int, float]]] = {"fast layer": [], **{name: [] for name in embedders}}
    total, done = passes * len(texts) * (1 + len(embedders)), iter(range(1, 10**7))
    for _ in range(passes):
        for text in texts:
            start = time.perf_counter()
            guard.check_fast(text)
            timed["fast layer"].append((len(text.strip()), (time.perf_counter() - start) * 1000))
            whole, pieces = guard.head.readings(text)
            for name, embed in embedders.items():
                start = time.perf_counter()
                embed_start(embed, whole + pieces)
                timed[name].append((len(text.strip()), (time.perf_counter() - start) * 1000))
            if progress:
                for _ in range(1 + len(embedders)):
                    progress("fast layer", next(done), total)

    def band(rows: list[tuple[int, float]], lo: int, hi: int) -> dict:
        values = [ms for n, ms in rows if lo <= n < hi or (hi == max_chars and n == hi)]
        return {"n": len(values) // passes, "p50": percentile(values, 0.5), "p95": percentile(values, 0.95)}

    bands = [(lo, min(hi, max_chars)) for lo, hi in BANDS if lo < max_chars]
    return {
        "rows": len(texts),
        "passes": passes,
        "split": f"test split of the public safety sets, rows of at most {max_chars} characters",
        "embedder": container.guard_embedder.name,
        "bands": {
            name: {f"{lo}-{hi}": band(rows, lo, hi) for lo, hi in bands} | {"all": band(rows, 0, max_chars)}
            for name, rows in timed.items()
        },
    }
