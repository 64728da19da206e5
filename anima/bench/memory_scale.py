"""`anima bench memory-scale`: search latency as the memory grows, sqlite-vec vs numpy.

Synthetic memories (sentences drawn from a fixed vocabulary, random unit vectors of
the embedder's width) are added to an encrypted store in steps (1k, 10k, 100k...);
after each step, the same queries run through the full hybrid `recall` (BM25 + vector
+ recency, fused, records fetched). The question is embedded beforehand, so the
figures are the search itself; embedding a question with MiniLM adds ~5 ms.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from anima.memory.retrieve import recall
from anima.store import Key, Memory, Store

WORDS = (
    "sister brother mother friend dog cat garden marathon piano guitar Lisbon Berlin Tokyo coffee tea pizza sushi "
    "hiking painting reading chess football yoga birthday wedding concert museum beach mountain river train flight "
    "doctor teacher engineer nurse manager project deadline meeting budget report holiday summer winter spring autumn"
).split()


class _Precomputed:
    """An embedder that returns prepared vectors: the benchmark times search, not embedding."""

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors, self.dim, self.name = vectors, len(next(iter(vectors.values()))), "precomputed"

    def embed(self, texts):
        return [self.vectors[t] for t in texts]


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def run_memory_scale(sizes: list[int], queries: int = 50, dim: int = 384, progress: Callable[[str, int, int], None] | None = None) -> dict:
    rng, pyrng = np.random.default_rng(0), random.Random(0)
    texts = [" ".join(pyrng.choice(WORDS) for _ in range(8)) for _ in range(max(sizes))]
    vectors = _unit(rng, max(sizes), dim)
    questions = [f"what about {pyrng.choice(WORDS)} and {pyrng.choice(WORDS)}?" for _ in range(queries)]
    embedder = _Precomputed(dict(zip(questions, _unit(rng, queries, dim))))
    start_day = datetime(2020, 1, 1, tzinfo=timezone.utc)
    result: dict = {"queries": queries, "dim": dim, "sizes": sizes, "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("sqlite-vec", "numpy"):
            store = Store(Path(tmp) / f"{backend}.db", Key("scale", raw=False, source="bench"), vectors=backend)
            rows, have = [], 0
            for size in sorted(sizes):
                batch = [Memory(texts[i], valid_from=(start_day + timedelta(minutes=i)).isoformat()) for i in range(have, size)]
                for lo in range(0, len(batch), 5000):
                    store.add_memories(batch[lo : lo + 5000], vectors[have + lo : have + lo + len(batch[lo : lo + 5000])])
                    if progress:
                        progress(f"{backend}: insert", have + lo + len(batch[lo : lo + 5000]), max(sizes))
                have = size
                recall(store, embedder, questions[0], start_day, tables=("memories",))  # warm caches
                times = []
                for n, q in enumerate(questions):
                    t0 = time.perf_counter()
                    recall(store, embedder, q, start_day, k=10, tables=("memories",))
                    times.append((time.perf_counter() - t0) * 1000)
                    if progress:
                        progress(f"{backend}: search at {size:,}", n + 1, len(questions))
                times.sort()
                rows.append({"memories": size, "p50_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2)})
            result["backends"][backend] = rows
            store.close()
    return result
