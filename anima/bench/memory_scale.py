"""`anima bench memory-scale`: search latency as the memory grows, sqlite-vec vs numpy.

What is searched is what `recall` searches: episodes (every message) and memories
(distilled facts), through the full hybrid recall (BM25 + vectors + time + recency
over both tables, fused, records fetched, each episode hit's reply attached), top 10,
in an encrypted store grown in steps (1k, 10k, 100k...).

The texts are LoCoMo's: its turns become episodes, ingested as `MemoryService.observe`
does (speaker, session time, one second apart, so replies are found), and its
generated observations become memories, as `reconcile` adds them (dated by their
session, pointing at the episodes they rest on). Copy 0 is the file as it is; every
further copy renames the two speakers of each conversation (speaker field and texts)
to a pair from NAME_PAIRS, in turn, and moves its dates COPY_DAYS later per copy. So a
text has at most len(NAME_PAIRS) + 1 versions, and larger sizes repeat texts. The n
items of a size are the first n of copy 0, copy 1, ... (each conversation's sessions
in order: a session's turns, then its observations). Nicknames inside the texts (conv-26's
"Mel") are left as they are.

Embeddings are real, from the embedder given (the configured one in the CLI): one per
distinct text, in batches, cached, so a text repeated across copies is embedded once.
Queries are distinct LoCoMo questions (a seeded draw), embedded beforehand, so the
latency figures are the search itself; `query_embed_ms` is what embedding one
question adds.
"""

from __future__ import annotations

import random
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable

import numpy as np

from anima.bench import p50_p95
from anima.bench.locomo_data import Sample, load_locomo
from anima.errors import BadInput
from anima.memory.ingest import sample_messages
from anima.memory.retrieve import recall
from anima.memory.service import MemoryService
from anima.models.base import Embedder
from anima.store import Key, Memory, Store

NAME_PAIRS = (("Noor", "Tomasz"), ("Ines", "Kwame"), ("Yuki", "Marta"))  # names LoCoMo does not use
COPY_DAYS = 730  # each copy two years after the one before
EMBED_BATCH = 64
SEED = 0


@dataclass(frozen=True)
class Item:
    """One row to add: an episode (a turn) or a memory (an observation)."""

    kind: str  # "episode" | "memory"
    text: str
    speaker: str
    role: str
    when: datetime
    source: str  # one copy of one conversation, e.g. "locomo:conv-26#2"
    ref: str = ""  # an episode's turn id
    rests_on: tuple[str, ...] = ()  # a memory's turn ids


def _copy(sample: Sample, n: int) -> list[Item]:
    """Copy `n` of one conversation: speakers renamed and dates moved when n > 0."""
    names = dict(zip((sample.speaker_a, sample.speaker_b), NAME_PAIRS[(n - 1) % len(NAME_PAIRS)])) if n else {}
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b") if names else None
    rename = (lambda text: pattern.sub(lambda m: names[m[0]], text)) if pattern else (lambda text: text)
    shift, source = timedelta(days=COPY_DAYS * n), f"locomo:{sample.sample_id}#{n}"
    observations: dict[int, list] = {}
    for o in sample.observations:
        observations.setdefault(o.session, []).append(o)
    items: list[Item] = []
    messages = iter(sample_messages(sample))  # the turns in order, with their times
    for session in sample.sessions:
        start = None
        for _ in session.turns:
            m = next(messages)
            start = start or m.when + shift
            items.append(Item("episode", rename(m.text), names.get(m.speaker, m.speaker), m.role, m.when + shift, source, m.ref))
        for o in observations.get(session.index, []) if start else []:
            items.append(Item("memory", rename(o.text), names.get(o.speaker, o.speaker), "", start, source, rests_on=o.evidence))
    return items


def corpus(samples: list[Sample], n: int) -> tuple[list[Item], int]:
    """The first `n` items of copy 0, copy 1, ... of every conversation; and how many copies that took."""
    items: list[Item] = []
    copies = 0
    while len(items) < n:
        more = [item for sample in samples for item in _copy(sample, copies)]
        if not more:
            raise BadInput("the LoCoMo file has no turns to build memories from", "give --data a LoCoMo file with sessions")
        items += more
        copies += 1
    return items[:n], copies


def _said(item: Item) -> str:
    """What gets embedded: as `MemoryService.observe` does for an episode; a memory's text."""
    return f"{item.speaker}: {item.text}" if item.kind == "episode" and item.speaker else item.text


class CachedEmbedder:
    """Embeds each distinct text once and keeps it (float32); `prepare` does it in batches."""

    def __init__(self, inner: Embedder):
        self.inner, self.dim, self.name = inner, inner.dim, inner.name
        self.vectors: dict[str, np.ndarray] = {}

    def prepare(self, texts: list[str], progress: Callable[[int, int], None] | None = None) -> int:
        todo = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        for lo in range(0, len(todo), EMBED_BATCH):
            part = todo[lo : lo + EMBED_BATCH]
            self.vectors.update(zip(part, np.asarray(self.inner.embed(part), dtype=np.float32)))
            if progress:
                progress(lo + len(part), len(todo))
        return len(todo)

    def embed(self, texts: list[str]) -> list[np.ndarray]:
        self.prepare(texts)
        return [self.vectors[t] for t in texts]


def _add(store: Store, memory: MemoryService, embedder: CachedEmbedder, items: list[Item], ids: dict[tuple[str, str], int]) -> None:
    for item in items:
        if item.kind == "episode":
            ids[(item.source, item.ref)] = memory.observe(item.text, item.role, item.speaker, item.when, source=item.source, ref=item.ref)
        else:
            sources = [ids[(item.source, ref)] for ref in item.rests_on if (item.source, ref) in ids]
            row = Memory(item.text, kind="fact", subject=item.speaker, ref_date=item.when.date().isoformat(), valid_from=item.when.isoformat(), confidence=0.8, source_ids=sources)
            store.add_memory(row, embedder.embed([item.text])[0])


def run_memory_scale(sizes: list[int], queries: int, embedder: Embedder, data: Path | list[Sample], progress: Callable[[str, int, int], None] | None = None) -> dict:
    if not sizes or min(sizes) < 1:
        raise BadInput(f"memory sizes must be at least 1, got {sorted(sizes)}", "give --n 1 or more")
    if queries < 1:
        raise BadInput(f"queries must be at least 1, got {queries}", "give --queries 1 or more")
    sizes = sorted(set(sizes))
    samples = data if isinstance(data, list) else load_locomo(data)
    distinct = list(dict.fromkeys(q.question for s in samples for q in s.questions))
    if queries > len(distinct):
        raise BadInput(f"the LoCoMo file has {len(distinct)} distinct questions, fewer than --queries {queries}", f"give --queries {len(distinct)} or fewer")
    questions = random.Random(SEED).sample(distinct, queries)
    items, copies = corpus(samples, sizes[-1])

    cache = CachedEmbedder(embedder)
    embed_ms = []
    for q in questions:  # one at a time, as a question arrives: that cost is reported, not timed below
        t0 = time.perf_counter()
        cache.vectors[q] = np.asarray(embedder.embed([q])[0], dtype=np.float32)
        embed_ms.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    embedded = cache.prepare([_said(i) for i in items], progress=progress and (lambda done, total: progress("embed distinct texts", done, total)))
    embed_s = time.perf_counter() - t0

    result: dict = {
        "queries": queries,
        "embedder": embedder.name,
        "dim": embedder.dim,
        "sizes": sizes,
        "texts": {
            "made": f"LoCoMo turns as episodes and observations as memories, from {copies} cop{'y' if copies == 1 else 'ies'} of {len(samples)} conversations "
                    f"(every copy after the first: speakers renamed, {len(NAME_PAIRS)} name pairs in turn, and dates {COPY_DAYS} days later per copy)",
            "conversations": len(samples),
            "copies": copies,
            "distinct_texts_embedded": embedded,
            "embed_seconds": round(embed_s, 1),
        },
        "query_embed_ms": p50_p95(embed_ms),
        "backends": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("sqlite-vec", "numpy"):
            store = Store(Path(tmp) / f"{backend}.db", Key("scale", raw=False, source="bench"), vectors=backend)
            memory = MemoryService(store, cache)
            rows, have, ids = [], 0, {}
            for size in sizes:
                for lo in range(have, size, 1000):
                    _add(store, memory, cache, items[lo : min(lo + 1000, size)], ids)
                    if progress:
                        progress(f"{backend}: insert", min(lo + 1000, size), sizes[-1])
                now = max(i.when for i in items[:size])
                recall(store, cache, questions[0], now)  # warm caches
                times = []
                for n, q in enumerate(questions):
                    t0 = time.perf_counter()
                    recall(store, cache, q, now, k=10)
                    times.append((time.perf_counter() - t0) * 1000)
                    if progress:
                        progress(f"{backend}: search at {size:,}", n + 1, len(questions))
                episodes = sum(1 for i in items[:size] if i.kind == "episode")
                rows.append({"items": size, "episodes": episodes, "memories": size - episodes, **{f"{p}_ms": v for p, v in p50_p95(times).items()}})
                have = size
            result["backends"][backend] = rows
            store.close()
    return result
