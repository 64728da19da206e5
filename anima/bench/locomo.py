"""`anima bench locomo`: long-term memory measured on LoCoMo conversations.

Splits (`split`): tune on one, quote the other.
- tune: conv-26, conv-30, conv-41, the three conversations retrieval's constants were
  already tuned on (see VECTOR_WEIGHT in memory/retrieve.py: "the first 3 LoCoMo dev
  conversations");
- report (the default): every other conversation: conv-42 and conv-43 in the dev
  file (502 questions), samples 5-9 as well in the full locomo10.json;
- all: both.
`limit` then keeps the split's first N conversations.

For each conversation: a fresh encrypted store; every turn ingested as an episode
with its session's timestamp (optionally also distilled into memories by the model,
one batch call per chunk of a session); then, for every question, anima's hybrid
recall (10 hits, fitted to the prompt budget as the assistant does) against a plain
BM25 baseline over the raw turns (10 turns). When memories were learned, recall over the
episodes alone is scored and answered too ("episodes_only"): the ablation of what
learning adds.

Recall counts turns against a budget of k, in the order the prompt shows them:
- turn_recall@k: the question counts when all its evidence turns are among the first
  k distinct turns the context shows. anima's memory block shows an episode hit's
  turn and then, under it, the reply; a memory stands for its source turns; a hit
  the block leaves out (its text is already shown as another hit's reply) shows
  nothing. BM25 shows one turn per hit.
- session_recall@k: every session holding evidence is among those k turns' sessions.
- hit_recall@k, hit_session_recall@k: the older per-hit figures, on everything the
  first k hits bring: an episode hit brings its reply, so up to 2k turns for anima
  (for BM25 they equal the turn figures).
Evidence ids that name no turn of the conversation are dropped; a question left with
none (two category-3 questions in conv-26) is skipped for recall and counted in
`skipped_no_evidence`, never as a hit.

Answers: `answer_limit` questions, drawn by `stratified` across every conversation
and category of the split (seeded), are answered by the model from each system's
context (token F1 as in LoCoMo's official evaluation). Full context: each
conversation's opening sessions, as many as fit in FULL_CONTEXT_TOKENS (one fixed
prefix per conversation), answer up to `full_limit` of the sampled questions whose
evidence lies inside that prefix (drawn the same way), beside anima's F1 on them.

What retrieval sees: the question's text and "now" (the last session's time), never
its evidence, category or answer. Evidence is used to score, categories to draw the
sample and group results. (The full-context baseline used to end the conversation at
each question's last evidence session, a context chosen by the evidence; it is a
fixed prefix now.)
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, TypeVar

from anima.bench import p50_p95
from anima.errors import BadInput
from anima.memory import MemoryService
from anima.memory.ingest import sample_messages
from anima.memory.locomo import CATEGORY_NAMES, Question, Sample, answer_f1, load_locomo
from anima.memory.retrieve import Hit, fit, memory_block, profile, recall
from anima.models.base import ChatModel, Embedder, Options, complete
from anima.store import Key, Store
from anima.timeparse import parse_session_time

K = (5, 10)
FULL_CONTEXT_TOKENS = 2500  # what fits beside the question in a 4k context on this CPU
SEED = 0
TUNE = ("conv-26", "conv-30", "conv-41")  # retrieval's constants were tuned on these
SPLITS = ("tune", "report", "all")

ANSWER_SYSTEM = (
    "You answer questions about a long conversation between {a} and {b}, using only the notes you are given."
)
ANSWER_USER = """{context}

Question: {question}
Answer in a short phrase, with exact words from the notes whenever possible.{extra}
Answer:"""
TEMPORAL = " Use the dates of the notes to answer with an approximate date."
# The Mem0 paper's judge, in short: generous on wording and date formats, strict on the fact.
JUDGE = """Label an answer to a question about a conversation as CORRECT or WRONG.
You get the question, the gold answer and the generated answer. Be generous: the generated answer is CORRECT
when it is about the same thing as the gold answer, even in other words or at more length; a date in another
format, or a relative date that means the same day or period, is CORRECT. It is WRONG when it names another
fact, another date, or says it does not know.

Question: {question}
Gold answer: {gold}
Generated answer: {answer}"""
JUDGE_SCHEMA = {"type": "object", "properties": {"label": {"enum": ["CORRECT", "WRONG"]}}, "required": ["label"]}

T = TypeVar("T", bound=Hashable)


def select_split(samples: list[Sample], split: str) -> list[Sample]:
    """The conversations of `split` (see the module docstring), in file order."""
    if split not in SPLITS:
        raise BadInput(f"unknown split {split!r}", f"use one of: {', '.join(SPLITS)}")
    chosen = [s for s in samples if split == "all" or (s.sample_id in TUNE) == (split == "tune")]
    if not chosen:
        raise BadInput(
            f"the file has no conversation in split {split!r} (it holds {', '.join(s.sample_id for s in samples)})",
            f"tune is {', '.join(TUNE)}; report is every other conversation; or use --split all",
        )
    return chosen


# ----------------------------------------------------------------------------- what a context shows
def _session(dia_id: str) -> str:
    return dia_id.split(":")[0]


def shown_turns(hits: list[Hit], ref_of: dict[int, str]) -> list[str]:
    """The turns anima's memory block shows for `hits`, in its order, each once.
    Follows `memory_block`: a hit whose text is already shown as another hit's reply
    is left out; an episode shows its turn, then its reply; a memory, its sources."""
    norm = lambda text: " ".join(text.lower().split())
    replies = {norm(h.reply.text) for h in hits if h.reply is not None}
    turns: list[str] = []
    for h in hits:
        if h.reply is None and norm(h.text) in replies:
            continue
        turns += [ref_of[i] for i in h.episode_ids if i in ref_of and ref_of[i] not in turns]
    return turns


def _found(turns: list[str], evidence: tuple[str, ...]) -> tuple[bool, bool]:
    """(every evidence turn is among `turns`, every evidence session is)."""
    return set(evidence) <= set(turns), {_session(e) for e in evidence} <= {_session(d) for d in turns}


def turn_coverage(turns: list[str], evidence: tuple[str, ...]) -> dict[int, tuple[bool, bool]]:
    """k -> coverage by the first k turns shown."""
    return {k: _found(turns[:k], evidence) for k in K}


def hit_coverage(provenance: list[list[str]], evidence: tuple[str, ...]) -> dict[int, tuple[bool, bool]]:
    """k -> coverage by everything the first k hits bring (an episode and its reply)."""
    return {k: _found([d for refs in provenance[:k] for d in refs], evidence) for k in K}


# ----------------------------------------------------------------------------- results
@dataclass
class Row:
    """One question's results for one system. `turns`/`hits` map k -> (turn covered,
    session covered); None when the question has no resolvable evidence."""

    category: int
    turns: dict[int, tuple[bool, bool]] | None = None
    hits: dict[int, tuple[bool, bool]] | None = None
    shown: int = 0  # distinct turns the context shows
    f1: float | None = None
    j: bool | None = None  # the judge's verdict (None: not judged)


def score(category: int, evidence: tuple[str, ...], shown: list[str], provenance: list[list[str]]) -> Row:
    if not evidence:
        return Row(category, shown=len(shown))
    return Row(category, turn_coverage(shown, evidence), hit_coverage(provenance, evidence), len(shown))


def _summary(rows: list[Row]) -> dict:
    scored = [r for r in rows if r.turns is not None]
    rate = lambda found: round(sum(found) / len(scored), 4) if scored else None
    out: dict = {"n": len(rows), "n_recall": len(scored), "skipped_no_evidence": len(rows) - len(scored)}
    for k in K:
        out[f"turn_recall@{k}"] = rate(r.turns[k][0] for r in scored)
        out[f"session_recall@{k}"] = rate(r.turns[k][1] for r in scored)
    for k in K:
        out[f"hit_recall@{k}"] = rate(r.hits[k][0] for r in scored)
        out[f"hit_session_recall@{k}"] = rate(r.hits[k][1] for r in scored)
    out["turns_shown_mean"] = round(statistics.mean(r.shown for r in rows), 2) if rows else None
    answered = [r.f1 for r in rows if r.f1 is not None]
    out["f1"] = round(statistics.mean(answered), 4) if answered else None
    out["n_answered"] = len(answered)
    judged = [r.j for r in rows if r.j is not None]
    out["j"] = round(sum(judged) / len(judged), 4) if judged else None
    out["n_judged"] = len(judged)
    return out


def report(rows: list[Row]) -> dict:
    by_cat = {str(c): _summary([r for r in rows if r.category == c]) for c in CATEGORY_NAMES}
    return {"overall": _summary(rows), "by_category": by_cat}


# ----------------------------------------------------------------------------- which questions are answered
def _spread(cells: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """(conversation, category) cells in an order that reaches every conversation and
    category early: each next cell adds the most not yet reached (the first such on
    ties), starting over once all are reached."""
    convs, cats = {c for c, _ in cells}, {k for _, k in cells}
    left, order, seen_convs, seen_cats = list(cells), [], set(), set()
    while left:
        if seen_convs == convs and seen_cats == cats:
            seen_convs, seen_cats = set(), set()
        best = max(left, key=lambda c: (c[0] not in seen_convs) + (c[1] not in seen_cats))
        left.remove(best)
        order.append(best)
        seen_convs.add(best[0])
        seen_cats.add(best[1])
    return order


def stratified(items: list[tuple[str, int, T]], n: int, seed: int = SEED) -> list[T]:
    """`n` of the keys in `items` ((conversation, category, key) triples), stratified
    by conversation × category: first one from each cell, cells taken in `_spread`
    order so that a small n still reaches every conversation and category; the rest
    in proportion to what is left in each cell (largest remainder). Within a cell a
    seeded shuffle decides. Keys come back in `items` order."""
    rng = random.Random(seed)
    cells: dict[tuple[str, int], list[T]] = {}
    for conv, cat, key in items:
        cells.setdefault((conv, cat), []).append(key)
    for keys in cells.values():
        rng.shuffle(keys)
    if n >= len(items):
        return [key for _, _, key in items]
    convs = list(dict.fromkeys(conv for conv, _ in cells))
    order = _spread(sorted(cells, key=lambda c: (convs.index(c[0]), c[1])))
    take = {c: int(c in order[:n]) for c in cells}
    rest = n - sum(take.values())
    if rest > 0:
        spare = {c: len(cells[c]) - 1 for c in cells}
        quota = {c: rest * spare[c] / sum(spare.values()) for c in cells}
        for c in cells:
            take[c] += int(quota[c])
        behind = sorted(cells, key=lambda c: (-(quota[c] - int(quota[c])), order.index(c)))
        for c in behind[: n - sum(take.values())]:
            take[c] += 1
    chosen = {key for c, keys in cells.items() for key in keys[: take[c]]}
    assert len(chosen) == n, (len(chosen), n)
    return [key for _, _, key in items if key in chosen]


def _counts(keys: list[tuple[str, int]], samples: list[Sample]) -> dict:
    category = {(s.sample_id, i): q.category for s in samples for i, q in enumerate(s.questions)}
    by_conv = {s.sample_id: sum(1 for sid, _ in keys if sid == s.sample_id) for s in samples}
    by_cat = {str(c): sum(1 for key in keys if category[key] == c) for c in CATEGORY_NAMES}
    return {"n": len(keys), "seed": SEED, "by_conversation": by_conv, "by_category": by_cat}


# ----------------------------------------------------------------------------- answering
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


def judge(model: ChatModel, q: Question, answer: str) -> bool | None:
    """The local model as judge (J, as the Mem0 paper scores answers); None for the
    adversarial category, which has no gold answer to compare with (F1 scores its choice)."""
    if q.category == 5:
        return None
    messages = [
        {"role": "user", "content": JUDGE.format(question=q.question, gold=q.answer, answer=answer or "(no answer)")}
    ]
    raw = complete(model, messages, Options(max_tokens=12, temperature=0.0, json_schema=JUDGE_SCHEMA))
    try:
        return raw.json().get("label") == "CORRECT"
    except ValueError:
        return False


def agreement(rows: list[tuple[bool, float]]) -> dict:
    """How J agrees with F1: the share of answers where J says correct exactly when F1 >= 0.5,
    and the mean F1 of the answers J calls correct and wrong."""
    if not rows:
        return {}
    mean = lambda v: round(statistics.mean(v), 4) if v else None
    return {
        "n": len(rows),
        "agree_f1_at_0.5": round(sum(j == (f >= 0.5) for j, f in rows) / len(rows), 4),
        "f1_when_correct": mean([f for j, f in rows if j]),
        "f1_when_wrong": mean([f for j, f in rows if not j]),
    }


def _turn_lines(sample: Sample, dia_ids: list[str]) -> str:
    turns = {t.dia_id: t for t in sample.turns}
    lines = [f"- [{turns[d].time}] {turns[d].speaker}: {turns[d].text}" for d in dia_ids if d in turns]
    return "Notes from the conversation:\n" + "\n".join(lines)


def opening_sessions(model: ChatModel, sample: Sample, tokens: int | None = None) -> tuple[str, set[int]]:
    """The conversation's opening sessions in full, as many as fit in `tokens`
    (FULL_CONTEXT_TOKENS by default): the same prefix whatever the question. ("", set())
    if even the first does not fit."""
    tokens = tokens or FULL_CONTEXT_TOKENS
    lines, inside = ["The conversation so far:"], set()
    for session in sample.sessions:
        more = [f"[{session.time}]"] + [f"{t.speaker}: {t.text}" for t in session.turns]
        if model.count_tokens("\n".join(lines + more)) > tokens:
            break
        lines += more
        inside.add(session.index)
    return ("\n".join(lines), inside) if inside else ("", set())


def _provenance(hits: list[Hit], ref_of: dict[int, str]) -> list[list[str]]:
    return [[ref_of[e] for e in h.episode_ids if e in ref_of] for h in hits]


def _tokens(counts: list[int]) -> dict:
    return {"mean": round(statistics.mean(counts), 1), "max": max(counts)} if counts else {}


def run_locomo(
    data: Path | list[Sample],
    model: ChatModel,
    embedder: Embedder,
    limit: int | None = None,
    answer_limit: int = 50,
    full_limit: int = 10,
    learn_model: ChatModel | None = None,
    expand: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    split: str = "report",
    full_model: ChatModel | None = None,
    full_tokens: int | None = None,
    judged: bool = True,
) -> dict:
    """`full_model`/`full_tokens`: the model (same weights, a context long enough) and the
    token budget for the full-context answers; by default the chat model and
    FULL_CONTEXT_TOKENS (the opening sessions only)."""
    samples = select_split(data if isinstance(data, list) else load_locomo(data), split)[:limit]
    turn_ids = {s.sample_id: {t.dia_id for t in s.turns} for s in samples}
    evidence = {
        (s.sample_id, i): tuple(e for e in q.evidence if e in turn_ids[s.sample_id])
        for s in samples
        for i, q in enumerate(s.questions)
    }
    # Which questions are answered, and which of those also with the opening sessions: drawn before any search.
    to_answer = stratified(
        [(s.sample_id, q.category, (s.sample_id, i)) for s in samples for i, q in enumerate(s.questions)], answer_limit
    )
    prefix = {s.sample_id: opening_sessions(model, s, full_tokens) for s in samples} if full_limit else {}
    inside = lambda key: bool(evidence[key]) and {int(_session(e)[1:]) for e in evidence[key]} <= prefix[key[0]][1]
    eligible = [key for key in to_answer if full_limit and inside(key)]
    category = {(s.sample_id, i): q.category for s in samples for i, q in enumerate(s.questions)}
    to_full = set(stratified([(key[0], category[key], key) for key in eligible], full_limit))
    answering = set(to_answer)

    rng = random.Random(SEED)
    systems: dict[str, list[Row]] = {"anima": [], "bm25": []}
    if learn_model is not None:  # the ablation: what recall finds without what was learned
        systems["episodes_only"] = []
    full: dict[str, list[float]] = {"full_context": [], "anima": [], "bm25": []}
    full_j: list[bool] = []
    full_j_anima: list[bool] = []
    ingest_s, n_messages, learn_s, search_ms = 0.0, 0, 0.0, []
    context_tokens: dict[str, list[int]] = {"anima": [], "bm25": []}
    total_q, done_q = sum(len(s.questions) for s in samples), 0
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
                memory.learn_history(
                    [(eid, m) for eid, m in zip(ref_of, messages)],
                    progress=lambda d, t, sid=sample.sample_id: progress and progress(f"learn {sid}", d, t),
                )
                learn_s += time.perf_counter() - start
            now = parse_session_time(sample.sessions[-1].time)
            prof = profile(store)

            for i, q in enumerate(sample.questions):
                key = (sample.sample_id, i)
                t0 = time.perf_counter()
                hits = fit(
                    prof, memory.recall(q.question, now=now, k=max(K)), turns=max(K)
                )  # what fits in the prompt is what counts
                search_ms.append((time.perf_counter() - t0) * 1000)
                bm25 = [ref_of[e] for e, _ in store.search_text("episodes", q.question, max(K)) if e in ref_of]
                ours = score(q.category, evidence[key], shown_turns(hits, ref_of), _provenance(hits, ref_of))
                base = score(q.category, evidence[key], bm25, [[d] for d in bm25])
                block, lines = memory_block(prof, hits), _turn_lines(sample, bm25)
                context_tokens["anima"].append(model.count_tokens(block))
                context_tokens["bm25"].append(model.count_tokens(lines))
                if key in answering:
                    said, ours.f1 = _answer(model, sample, q, block, rng)
                    ours.j = judge(model, q, said) if judged else None
                    said, base.f1 = _answer(model, sample, q, lines, rng)
                    base.j = judge(model, q, said) if judged else None
                    if key in to_full:
                        said, f1 = _answer(full_model or model, sample, q, prefix[sample.sample_id][0], rng)
                        full["full_context"].append(f1)
                        full["anima"].append(ours.f1)
                        full["bm25"].append(base.f1)
                        if judged and q.category != 5:
                            full_j.append(judge(model, q, said))
                            full_j_anima.append(ours.j)
                systems["anima"].append(ours)
                systems["bm25"].append(base)
                if "episodes_only" in systems:
                    alone = fit(prof, recall(store, embedder, q.question, now, max(K), ("episodes",)), turns=max(K))
                    row = score(q.category, evidence[key], shown_turns(alone, ref_of), _provenance(alone, ref_of))
                    if key in answering:
                        said, row.f1 = _answer(model, sample, q, memory_block(prof, alone), rng)
                        row.j = judge(model, q, said) if judged else None
                    systems["episodes_only"].append(row)
                done_q += 1
                if progress:
                    progress("questions", done_q, total_q)
            store.close()
    mean = lambda v: round(statistics.mean(v), 4) if v else None
    result: dict = {"split": split, "conversations": [s.sample_id for s in samples], "k": list(K)}
    result.update({name: report(rows) for name, rows in systems.items()})
    result["answer_sample"] = _counts(to_answer, samples)
    result["full_context"] = {
        "n": len(full["full_context"]),
        "eligible": len(eligible),
        "prefix_sessions": {sid: len(p[1]) for sid, p in prefix.items()},
        "sessions": {s.sample_id: len(s.sessions) for s in samples},
        "prefix_tokens": full_tokens or FULL_CONTEXT_TOKENS,
        "f1": mean(full["full_context"]),
        "anima_f1_same_questions": mean(full["anima"]),
        "bm25_f1_same_questions": mean(full["bm25"]),
        "j": mean(full_j),
        "anima_j_same_questions": mean(full_j_anima),
    }
    rated = [(r.j, r.f1) for rows in systems.values() for r in rows if r.j is not None]
    result["judge"] = {
        "model": "the chat model",
        "agreement": agreement(rated),
        "categories": "1-4 (5 has no gold answer)",
    }
    result["ingest"] = {
        "conversations": len(samples),
        "messages": n_messages,
        "seconds": round(ingest_s, 2),
        "ms_per_message": round(ingest_s / max(n_messages, 1) * 1000, 2),
        "learn_seconds": round(learn_s, 1) if learn_model else None,
    }
    result["search_ms"] = p50_p95(search_ms)
    result["context_tokens"] = {name: _tokens(counts) for name, counts in context_tokens.items()}
    result["answered"] = len(to_answer)
    return result
