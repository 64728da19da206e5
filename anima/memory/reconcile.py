"""Fold a new candidate memory into what is already known: add, merge or invalidate.

- nothing similar (cosine below SIMILAR): add it;
- a near-copy (cosine at least SAME, or the same words): merge, i.e. keep the old one
  and add this message to its sources;
- otherwise ask the model, with one small JSON call, whether the new one repeats an
  old one (merge), replaces it (invalidate the old: it gets `valid_to`, it is never
  overwritten or deleted) or is simply new (add). Without a model (learning a long
  history in bulk, where one call per memory would cost more than the extraction
  itself) it is added: keeping both loses nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from anima.memory.extract import Candidate
from anima.models.base import ChatModel, Options, complete
from anima.store import Memory, Store

SIMILAR = 0.55  # below: unrelated, add without asking
SAME = 0.95  # above: the same statement, merge without asking

SCHEMA = {
    "type": "object",
    "properties": {"action": {"type": "string", "enum": ["add", "merge", "invalidate"]}, "target": {"type": "integer"}},
    "required": ["action", "target"],
}
SYSTEM = """You keep a person's memory tidy. Given existing memories and a new one, answer in JSON:
{"action": "merge", "target": N}       the new one says the same as memory N
{"action": "invalidate", "target": N}  the new one replaces memory N (it changed or is no longer true)
{"action": "add", "target": 0}         the new one is different information
"""


@dataclass
class Decision:
    action: str  # add | merge | invalidate
    target: int | None  # memory id merged into or invalidated
    memory_id: int  # the memory that now holds the information


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def decide(
    model: ChatModel | None, candidate: Candidate, similar: list[tuple[Memory, float]]
) -> tuple[str, int | None]:
    close = [(m, s) for m, s in similar if s >= SIMILAR]
    if not close:
        return "add", None
    best, score = close[0]
    if score >= SAME or _words(best.text) == _words(candidate.text):
        return "merge", best.id
    if model is None:
        return "add", None
    listing = "\n".join(f"{m.id}. {m.text}" + (f" (date {m.ref_date})" if m.ref_date else "") for m, _ in close[:3])
    reply = complete(
        model,
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Existing memories:\n{listing}\n\nNew memory: {candidate.text}"},
        ],
        Options(max_tokens=30, temperature=0.0, json_schema=SCHEMA),
    )
    try:
        data = reply.json()
        action, target = data["action"], int(data["target"])
    except (ValueError, KeyError, TypeError):
        return "add", None  # an unreadable answer loses nothing: keep both
    if action in ("merge", "invalidate") and target in {m.id for m, _ in close}:
        return action, target
    return "add", None


def reconcile(
    store: Store, model: ChatModel | None, candidate: Candidate, vector, source_ids: list[int], when: str
) -> Decision:
    hits = store.search_vector("memories", vector, 8)
    by_id = {m.id: m for m in store.memories([i for i, _ in hits])}
    similar = [(by_id[i], s) for i, s in hits if i in by_id and by_id[i].valid_to is None]
    action, target = decide(model, candidate, similar)
    if action == "merge":
        old = by_id[target]
        old.source_ids = sorted(set(old.source_ids) | set(source_ids))
        old.confidence = min(1.0, old.confidence + 0.1)
        old.ref_date = old.ref_date or candidate.ref_date
        store.update_memory(old)
        return Decision("merge", target, target)
    if action == "invalidate":
        store.invalidate_memory(target, when)
    memory = Memory(
        candidate.text,
        kind=candidate.kind,
        subject=candidate.subject,
        ref_date=candidate.ref_date,
        valid_from=when,
        confidence=0.8,
        source_ids=list(source_ids),
    )
    store.add_memory(memory, vector)
    return Decision(action, target, memory.id)
