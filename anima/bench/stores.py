"""Stores that hold real conversations, for benchmarks that measure what users get.

A user of anima has talked with it before: their store holds episodes (every message,
embedded) of past conversations. The benches fill a store with one LoCoMo
conversation (episodes only, as `anima memory ingest` does without --learn) and ask
that conversation's own questions, each once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from anima.errors import BadInput
from anima.memory.ingest import sample_messages
from anima.memory.locomo import Sample, load_locomo
from anima.memory.service import MemoryService
from anima.store import Key, Store

BENCH_KEY = Key("bench", raw=False, source="bench")


def default_data() -> Path:
    """../shared/data/locomo/locomo_dev.json, beside the working directory or this checkout."""
    here = Path(__file__).resolve().parents[2]
    for base in (Path.cwd(), Path.cwd().parent, here, here.parent):
        candidate = base / "shared" / "data" / "locomo" / "locomo_dev.json"
        if candidate.is_file():
            return candidate
    raise BadInput("no LoCoMo file found (../shared/data/locomo/locomo_dev.json)", "give one with --data")


def conversations(data: Path | None, n: int) -> list[Sample]:
    """The first `n` LoCoMo conversations of `data` (default: ../shared/data/locomo)."""
    path = data or default_data()
    samples = load_locomo(path)
    if len(samples) < n:
        raise BadInput(
            f"{path} holds {len(samples)} conversations; {n} are needed", "use fewer users, or a larger LoCoMo file"
        )
    return samples[:n]


def fill(path: Path, sample: Sample, embedder, progress=None) -> int:
    """A new encrypted store at `path` holding every message of `sample` as an episode."""
    store = Store(path, BENCH_KEY)
    memory = MemoryService(store, embedder, None)
    messages = sample_messages(sample)
    for i, m in enumerate(messages):
        memory.observe(m.text, m.role, m.speaker, m.when, source=m.source, ref=m.ref)
        if progress:
            progress(i + 1, len(messages))
    store.close()
    return len(messages)


def copy_store(template: Path, dest: Path) -> Store:
    """A fresh copy of a filled store (the template was closed, so it is one file)."""
    shutil.copyfile(template, dest)
    return Store(dest, BENCH_KEY)


def questions(sample: Sample, n: int | None = None) -> list[str]:
    """The conversation's distinct questions, in order."""
    found = list(dict.fromkeys(q.question for q in sample.questions))
    return found[:n] if n else found
