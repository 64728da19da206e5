"""`anima bench locomo`: long-term memory measured on LoCoMo conversations.

For each conversation: a fresh encrypted store; every turn ingested as an episode
with its session's timestamp (optionally also distilled into memories by the model,
one batch call per chunk of a session); then, for every question, anima's hybrid
recall (top 10) is compared with the evidence turns, against a plain BM25 baseline
over the raw turns:

- turn_recall@k: the question counts when the provenance of the top-k results (an
  episode's own turn; a memory's source turns) covers all its evidence turns;
- session_recall@k: when the top-k results come from every session holding evidence.

The first `answer_limit` questions are also answered by the same model from each
system's context (token F1 as in LoCoMo's official evaluation), and a few whose
evidence sits in the opening sessions are answered with those sessions in full
("full context", the upper baseline a CPU can afford).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from anima.bench.locomo_data import CATEGORY_NAMES, Question, Sample, answer_f1, load_locomo
from anima.memory import MemoryService
from anima.memory.ingest import sample_messages
from anima.memory.retrieve import Hit, fit, memory_block, profile
from anima.models.base import ChatModel, Embedder, Options, complete
from anima.store import Key, Store
from anima.timeparse import parse_session_time

K = (5, 10)
FULL_CONTEXT_TOKENS = 2500  # what fits beside the question in a 4k context on this CPU

ANSWER_SYSTEM = "You answer questions about a long conversation between {a} and {b}, using only the notes you are given."
ANSWER_USER = """{context}

Question: {question}
Answer in a short phrase, with exact words from the notes whenever possible.{extra}
Answer:"""
TEMPORAL = " Use the dates of the notes to answer with an approximate date."


@dataclass
class Row:
    """One question's results for one system."""

    category: int
    hits: dict[int, tuple[bool, bool]] = field(default_factory=dict)  # k -> (turn covered, session covered)
    f1: float | None = None


def _session(dia_id: str) -> str:
    return dia_id.split(":")[0]


def _coverage(provenance: list[list[str]], evidence: tuple[str, ...]) -> dict[int, tuple[bool, bool]]:
    found = {}
    for k in K:
        turns = {d for refs in provenance[:k] for d in refs}
        found[k] = (set(evidence) <= turns, {_session(e) for e in evidence} <= {_session(d) for d in turns})
    return found


def _summary(rows: list[Row]) -> dict:
    out = {"n": len(rows)}
    for k in K:
        out[f"turn_recall@{k}"] = round(sum(r.hits[k][0] for r in rows) / len(rows), 4) if rows else None
        out[f"session_recall@{k}"] = round(sum(r.hits[k][1] for r in rows) / len(rows), 4) if rows else None
    answered = [r.f1 for r in rows if r.f1 is not None]
    out["f1"] = round(statistics.mean(answered), 4) if answered else None
    out["n_answered"] = len(answered)
    return out


def report(rows: list[Row]) -> dict:
    by_cat = {str(c): _summary([r for r in rows if r.category == c]) for c in CATEGORY_NAMES}
    return {"overall": _summary(rows), "by_category": by_cat}


def _answer(model: ChatModel, sample: Sample, q: Question, context: str, rng: random.Random) -> tuple[str, float]:
    extra = TEMPORAL if q.category == 2 else ""
    question = q.question
    if q.category == 5:  # as the official evaluation: offer "not mentioned" beside the tempting answer
        options = ["Not mentioned in the conversation", q.adversarial_answer or "yes"]
        rng.shuffle(options)
        question += f" Select the correct answer: (a) {options[0]} (b) {options[1]}."
    messages = [
        {"role": "system", "content": ANSWER_SYSTEM.format(a=sample.speaker_a, b=sample.speaker_b)},
        {"role": "user", "content": ANSWER_USER.format(context=context, question=question, extra=extra)},
    ]
    text = complete(model, messages, Options(max_tokens=32, temperature=0.0)).text.strip()
    return text, answer_f1(text, q.answer, q.category)


def _turn_lines(sample: Sample, dia_ids: list[str]) -> str:
    turns = {t.dia_id: t for t in sample.turns}
    lines = [f"- [{turns[d].time}] {turns[d].speaker}: {turns[d].text}" for d in dia_ids if d in turns]
    return "Notes from the conversation:\n" + "\n".join(lines)


def run_locomo(
    data: Path,
    model: ChatModel,
    embedder: Embedder,
    limit: int | None = None,
    answer_limit: int = 50,
    full_limit: int = 10,
    learn_model: ChatModel | None = None,
    expand: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    samples = load_locomo(data)[:limit]
    rng = random.Random(0)
    systems: dict[str, list[Row]] = {"anima": [], "bm25": []}
    full: dict[str, list[float]] = {"full_context": [], "anima": []}
    ingest_s, n_messages, learn_s, search_ms, context_tokens = 0.0, 0, 0.0, [], []
    answered = 0
    total_q = sum(len(s.questions) for s in samples)
    done_q = 0
    with tempfile.TemporaryDirectory() as tmp:
        for sample in samples:
            store = Store(Path(tmp) / f"{sample.sample_id}.db", Key("locomo", raw=False, source="bench"))
            memory = MemoryService(store, embedder, learn_model or model, expand)
            messages = sample_messages(sample)
            start = time.perf_counter()
            ref_of: dict[int, str] = {}
            for i, m in enumerate(messages):
                ref_of[memory.observe(m.text, m.role, m.speaker, m.when, source=m.source, ref=m.ref)] = m.ref
                if progress:
                    progress(f"ingest {sample.sample_id}", i + 1, len(messages))
            ingest_s += time.perf_counter() - start
            n_messages += len(messages)
            if learn_model is not None:
                start = time.perf_counter()
                memory.learn_history([(eid, m) for eid, m in zip(ref_of, messages)], progress=lambda d, t: progress and progress(f"learn {sample.sample_id}", d, t))
                learn_s += time.perf_counter() - start
            now = parse_session_time(sample.sessions[-1].time)
            prof = profile(store)

            def provenance(hits: list[Hit]) -> list[list[str]]:
                return [[ref_of[i] for i in h.episode_ids if i in ref_of] for h in hits]

            for q in sample.questions:
                t0 = time.perf_counter()
                hits = fit(prof, memory.recall(q.question, now=now, k=max(K)))  # what fits in the prompt is what counts
                search_ms.append((time.perf_counter() - t0) * 1000)
                bm25 = [[ref_of[i]] for i, _ in store.search_text("episodes", q.question, max(K)) if i in ref_of]
                ours, base = Row(q.category, _coverage(provenance(hits), q.evidence)), Row(q.category, _coverage(bm25, q.evidence))
                block = memory_block(prof, hits)
                context_tokens.append(model.count_tokens(block))
                if answered < answer_limit:
                    _, ours.f1 = _answer(model, sample, q, block, rng)
                    _, base.f1 = _answer(model, sample, q, _turn_lines(sample, [refs[0] for refs in bm25]), rng)
                    answered += 1
                    if len(full["full_context"]) < full_limit and (prefix := _opening_sessions(model, sample, q)):
                        full["full_context"].append(_answer(model, sample, q, prefix, rng)[1])
                        full["anima"].append(ours.f1)
                systems["anima"].append(ours)
                systems["bm25"].append(base)
                done_q += 1
                if progress:
                    progress("questions", done_q, total_q)
            store.close()
    result = {name: report(rows) for name, rows in systems.items()}
    result["full_context"] = {
        "n": len(full["full_context"]),
        "f1": round(statistics.mean(full["full_context"]), 4) if full["full_context"] else None,
        "anima_f1_same_questions": round(statistics.mean(full["anima"]), 4) if full["anima"] else None,
    }
    result["ingest"] = {
        "conversations": len(samples),
        "messages": n_messages,
        "seconds": round(ingest_s, 2),
        "ms_per_message": round(ingest_s / max(n_messages, 1) * 1000, 2),
        "learn_seconds": round(learn_s, 1) if learn_model else None,
    }
    q = sorted(search_ms)
    result["search_ms"] = {"p50": round(statistics.median(q), 2), "p95": round(q[int(0.95 * (len(q) - 1))], 2)} if q else {}
    result["context_tokens"] = {"mean": round(statistics.mean(context_tokens), 1), "max": max(context_tokens)} if context_tokens else {}
    result["answered"] = answered
    return result


def _opening_sessions(model: ChatModel, sample: Sample, q: Question) -> str | None:
    """The conversation's first sessions in full, if they hold all of q's evidence and fit."""
    need = max((int(_session(e)[1:]) for e in q.evidence), default=None)
    if need is None:
        return None
    lines = ["The conversation so far:"]
    for session in sample.sessions:
        if session.index > need:
            break
        lines.append(f"[{session.time}]")
        lines += [f"{t.speaker}: {t.text}" for t in session.turns]
    text = "\n".join(lines)
    return text if model.count_tokens(text) <= FULL_CONTEXT_TOKENS else None
