"""What the rest of anima calls: observe messages, learn from them, recall, and let the
user see and change everything that is kept.

Two layers. Every message becomes an episode at once (FTS + embedding, no LLM
call), so nothing said is ever out of reach. Semantic memories are distilled from
episodes by the model, in a background `Learner`, after the reply is out.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from types import UnionType
from typing import Any, Callable, Union, get_args, get_origin, get_type_hints

from anima.errors import AnimaError, BadInput, NotFound
from anima.memory.extract import extract_all, of_its_speaker, told
from anima.memory.reconcile import Decision, reconcile
from anima.memory.retrieve import Hit, fit, memory_block, profile, recall
from anima.models.base import ChatModel, Embedder, Preempted, giving_way
from anima.store import KINDS, Episode, Memory, Store
from anima.store.db import is_utf8

log = logging.getLogger("anima")
EXPORT_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class MemoryService:
    store: Store
    embedder: Embedder | None
    model: ChatModel | None = None
    expand: bool = False  # query expansion: one more model call per recall
    # a learned memory is kept only if its sentence passes this (the guard's fast layer):
    # memories are read into later prompts, where no input check sees them
    allowed: Callable[[str], bool] | None = None

    def _vector(self, text: str):
        return self.embedder.embed([text])[0] if self.embedder else None

    # --- the two layers ----------------------------------------------------

    def observe(
        self,
        text: str,
        role: str = "user",
        speaker: str = "",
        when: datetime | None = None,
        conversation_id: int | None = None,
        source: str = "chat",
        ref: str | None = None,
    ) -> int:
        """Keep a message as an episode, searchable at once."""
        episode = Episode(
            text,
            role=role,
            speaker=speaker,
            ts=(when or utcnow()).isoformat(),
            source=source,
            ref=ref,
            conversation_id=conversation_id,
        )
        said = f"{speaker}: {text}" if speaker else text  # "what did Ana say about X" finds Ana's turns
        # Tried and left (2026-12-04): the message before it in the full-text entry too, so an
        # answer is found by its question's words. Turn recall@10 on LoCoMo's tune split 0.705 ->
        # 0.739, on the report split 0.699 -> 0.701 (multi-hop 0.16 -> 0.12): it did not carry over.
        return self.store.add_episode(episode, self._vector(said), said)

    def learn(self, episode_id: int, text: str, when: datetime, speaker: str = "User") -> list[Decision]:
        """Distil memories from one message and fold them in (slow: model calls)."""
        return self._learn([episode_id], [(speaker, text)], when)

    def _learn(
        self, episode_ids: list[int], messages: list[tuple[str, str]], when: datetime, ask: bool = True
    ) -> list[Decision]:
        """`ask`: let the model settle a new memory that is close to an old one (see reconcile)."""
        return self._learn_all([(episode_ids, messages, when)], ask)

    def _learn_all(self, chunks: list[tuple[list[int], list[tuple[str, str]], datetime]], ask: bool) -> list[Decision]:
        """`_learn` for each (episode ids, messages, when) chunk, the model reading them
        together where it can (`extract_all`)."""
        read = []
        for episode_ids, messages, when in chunks:
            said = [told(text) for _, text in messages]
            keep = [i for i, (_, text) in enumerate(messages) if of_its_speaker(text) and said[i]]
            if keep:
                read.append(([episode_ids[i] for i in keep], [(messages[i][0], said[i]) for i in keep], when))
        if self.model is None or not read:
            return []
        decisions = []
        found = extract_all(self.model, [(messages, when) for _, messages, when in read])
        for (episode_ids, _, when), candidates in zip(read, found):
            for candidate in candidates:
                if self.allowed is not None and not self.allowed(candidate.text):
                    log.info("memory not kept: the guard flagged it")
                    continue
                vector = self._vector(candidate.text)
                sources = [episode_ids[i] for i in candidate.sources] or self._closest(episode_ids, vector)
                decisions.append(
                    reconcile(
                        self.store,
                        self.model if ask else None,
                        candidate=candidate,
                        vector=vector,
                        source_ids=sources,
                        when=when.isoformat(),
                    )
                )
        return decisions

    def _closest(self, episode_ids: list[int], vector) -> list[int]:
        """When the model did not say which message a memory came from: the nearest one."""
        hits = (
            [i for i, _ in self.store.search_vector("episodes", vector, 50) if i in episode_ids]
            if vector is not None
            else []
        )
        return hits[:1] or episode_ids[:1]

    def learn_history(self, items: list[tuple[int, Any]], chunk: int = 6, progress=None) -> list[Decision]:
        """Batch learning for an imported history: one model call per chunk of a session
        (messages less than an hour apart), instead of one per message. The small model
        mixes people up and cites the wrong message in longer chunks, so chunks are short.
        A memory close to an old one is kept beside it rather than settled by the model
        (see reconcile): on a long history those calls would cost more than the reading.
        Chunks go to the model in groups it decodes together (`capabilities.parallel`)."""
        chunks, current = [], []
        for eid, m in items:
            if current and (len(current) >= chunk or (m.when - current[-1][1].when).total_seconds() > 3600):
                chunks.append(current)
                current = []
            current.append((eid, m))
        chunks += [current] if current else []
        decisions = []
        # several groups a call: a reply that ends frees its sequence for the next chunk
        together = 4 * max(1, self.model.capabilities.parallel) if self.model is not None else 1
        for n in range(0, len(chunks), together):
            group = chunks[n : n + together]
            decisions += self._learn_all(
                [([eid for eid, _ in part], [(m.speaker, m.text) for _, m in part], part[0][1].when) for part in group],
                ask=False,
            )
            if progress:
                progress(n + len(group), len(chunks))
        return decisions

    def recall(self, query: str, now: datetime | None = None, k: int = 8) -> list[Hit]:
        return recall(self.store, self.embedder, query, now or utcnow(), k, expand=self.model if self.expand else None)

    def context(
        self, query: str, now: datetime | None = None, k: int = 10, clean: Callable[[str], str] = str
    ) -> tuple[str, list[Hit]]:
        """The memory part of the prompt for `query` (at most `k` remembered messages
        and memories), and the hits it shows; `clean` is applied to each remembered
        text as it goes into the prompt."""
        known = profile(self.store)
        hits = fit(known, self.recall(query, now, k), turns=k)
        return memory_block(known, hits, clean), hits

    # --- the user's controls -----------------------------------------------

    def get(self, memory_id: int) -> Memory:
        found = self.store.memories([memory_id])
        if not found:
            raise NotFound(f"no memory with id {memory_id}", "`anima memory list` shows the ids")
        return found[0]

    def add(self, text: str, kind: str = "fact", subject: str = "user", ref_date: str | None = None) -> Memory:
        if not text.strip():
            raise BadInput("the memory is empty", "give the text to remember")
        if kind not in KINDS:
            raise BadInput(f"unknown kind '{kind}'", f"use one of: {', '.join(KINDS)}")
        memory = Memory(text.strip(), kind=kind, subject=subject, ref_date=ref_date)
        self.store.add_memory(memory, self._vector(memory.text))
        return memory

    def edit(self, memory_id: int, text: str | None = None, kind: str | None = None) -> Memory:
        memory = self.get(memory_id)
        if kind is not None and kind not in KINDS:
            raise BadInput(f"unknown kind '{kind}'", f"use one of: {', '.join(KINDS)}")
        changed_text = text is not None and text.strip() != memory.text
        memory.text = text.strip() if text is not None else memory.text
        memory.kind = kind or memory.kind
        memory.confidence = 1.0  # the user said so
        self.store.update_memory(memory, self._vector(memory.text) if changed_text else None)
        return memory

    def forget(self, memory_id: int) -> None:
        """Hard delete: the row, its full-text entry and its vector."""
        if not self.store.delete_memory(memory_id):
            raise NotFound(f"no memory with id {memory_id}", "`anima memory list` shows the ids")

    def why(self, memory_id: int) -> tuple[Memory, list[Episode]]:
        memory = self.get(memory_id)
        return memory, self.store.episodes(memory.source_ids)

    def export(self) -> dict[str, Any]:
        memories = self.store.list_memories(include_invalid=True, limit=10**9)
        source_ids = sorted({i for m in memories for i in m.source_ids})
        return {
            "version": EXPORT_VERSION,
            "memories": [asdict(m) for m in memories],
            "episodes": [asdict(e) for e in self.store.episodes(source_ids)],
        }

    def import_(self, data: Any) -> int:
        """Read an export back; ids are kept when free, else remapped. Returns the count."""
        if (
            not isinstance(data, dict)
            or data.get("version") != EXPORT_VERSION
            or not isinstance(data.get("memories"), list)
            or not isinstance(data.get("episodes", []), list)
        ):
            raise BadInput(
                "not an anima memory export", f"expected JSON with version {EXPORT_VERSION} and a memories list"
            )
        episodes = [_record(Episode, row, f"episode {n}") for n, row in enumerate(data.get("episodes", []), 1)]
        memories = [
            _record(Memory, row, f"memory {n}") for n, row in enumerate(data["memories"], 1)
        ]  # all checked before any is stored
        episode_ids = {}
        for episode in episodes:
            old = episode.id
            if self.store.episodes([old]):
                episode.id = None
            episode_ids[old] = self.store.add_episode(episode, self._vector(episode.text))
        for memory in memories:
            memory.source_ids = [episode_ids.get(i, i) for i in memory.source_ids]
            if self.store.memories([memory.id]):
                memory.id = None
            self.store.add_memory(memory, self._vector(memory.text))
        return len(memories)


def _record(cls: type, row: Any, where: str):
    """One record of an export, with the fields of `cls`, each of its type: a malformed
    one stops the import before anything is stored."""
    try:
        record = cls(**row)
    except TypeError as exc:
        raise BadInput(
            f"the export has a malformed record ({where}): {exc}",
            "export it again, or fix the file; nothing was imported",
        ) from exc
    hints = get_type_hints(cls)
    if bad := next((f.name for f in fields(cls) if not _fits(getattr(record, f.name), hints[f.name])), None):
        raise BadInput(
            f"the export has a malformed record ({where}): bad {bad} {getattr(record, bad)!r:.60}",
            "export it again, or fix the file; nothing was imported",
        )
    if getattr(record, "kind", KINDS[0]) not in KINDS:
        raise BadInput(
            f"the export has a malformed record ({where}): unknown kind {record.kind!r:.40}",
            f"use one of: {', '.join(KINDS)}; nothing was imported",
        )
    return record


def _fits(value: Any, hint: Any) -> bool:
    """Is a value read from JSON of the type a record's field declares?"""
    if get_origin(hint) in (Union, UnionType):
        return any(_fits(value, h) for h in get_args(hint))
    if get_origin(hint) is list:
        return isinstance(value, list) and all(_fits(v, get_args(hint)[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63  # what SQLite holds
    if hint is str:
        return isinstance(value, str) and is_utf8(value)
    return value is None if hint is type(None) else isinstance(value, hint)


class Learner:
    """Runs `MemoryService.learn` on a background thread, one message at a time, from the
    queue in the user's store (`store.learn_queue`): what is queued survives a stop or a
    kill -9 and is learned from at the next start, and several processes on one store
    share it. A failure is logged and skipped: learning never breaks a conversation. It
    starts a message only when `idle()`, and gives the model up within milliseconds when
    `busy()` (a request came in; see `giving_way`), then learns from that message again at
    the next quiet moment."""

    LEASE = 600.0  # seconds a taken message is held: one whose process died is taken again after this

    def __init__(
        self,
        memory: MemoryService,
        idle: Callable[[], bool] = lambda: True,
        busy: Callable[[], bool] = lambda: False,
        poll: float = 0.5,
    ):
        self.memory = memory
        self.queue = memory.store.learn_queue
        self.idle = idle  # learning waits while this says the model is wanted elsewhere (a server's requests)
        self.busy = busy  # a request is in flight: learning in progress stops for it
        self.poll = poll  # seconds between looks at the queue when it is empty (another process may add)
        self.errors: list[str] = []
        self.done = 0  # messages learned from (or failed), for /api/health
        self.preempted = 0  # times learning gave way to a request
        self.busy_since: Callable[[], float | None] = lambda: None  # when the request in flight came (monotonic)
        self.gave_way_ms_max: float | None = None  # slowest give-way, from the request's arrival
        self._stopped = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="anima-learner", daemon=True)
        self._thread.start()

    def submit(self, episode_id: int, text: str, when: datetime, speaker: str = "the user") -> None:
        self.queue.add(episode_id, text, when.isoformat(), speaker)
        self._wake.set()

    def pending(self) -> int:
        """Messages queued or being learned from (by any process on this store)."""
        return self.queue.count()

    def drain(self) -> None:
        """Wait until every queued message has been learned from (or the learner stopped)."""
        while not self._stopped and self._thread.is_alive() and self.pending():
            time.sleep(0.05)

    def stop(self, wait: float = 0.0) -> None:
        """Stop: a message already being learned from finishes; one still waiting for a
        quiet moment, and everything queued, stays queued for the next start. `wait`:
        seconds to wait for the thread to end."""
        self._stopped = True
        self._wake.set()
        if wait:
            self._thread.join(wait)

    def _quiet(self) -> bool:
        """Wait for a quiet moment; False when stopped meanwhile."""
        while not self.idle() and not self._stopped:
            time.sleep(0.1)
        return not self._stopped

    def _run(self) -> None:
        while not self._stopped:
            try:
                job = self.queue.take(self.LEASE)
            except AnimaError as exc:  # the store went away for a moment: look again later
                log.warning("the learner cannot read its queue: %s", exc)
                job = None
            if job is None:
                self._wake.wait(self.poll)
                self._wake.clear()
                continue
            if not self._quiet():  # stopped while it waited: the message stays queued
                self.queue.release(job["episode_id"])
                return
            self._learn(job)

    def _learn(self, job: dict) -> None:
        episode_id, when = job["episode_id"], datetime.fromisoformat(job["ts"])
        try:
            while True:
                try:
                    with giving_way(self.busy):
                        self.memory.learn(episode_id, job["text"], when, job["speaker"])
                    break
                except Preempted:  # a request came in: the same message again, at the next quiet moment
                    self.preempted += 1
                    if (since := self.busy_since()) is not None:
                        ms = (time.monotonic() - since) * 1000
                        self.gave_way_ms_max = max(ms, self.gave_way_ms_max or 0.0)
                    if not self._quiet():
                        self.queue.release(episode_id)
                        return
        except AnimaError as exc:
            self.errors.append(str(exc))
            log.warning("learning from message %s failed: %s", episode_id, exc)
        except Exception as exc:  # a bug: keep the log, keep the conversation
            self.errors.append(repr(exc))
            log.exception("learning from message %s failed", episode_id)
        self.queue.done(episode_id)
        self.done += 1


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True)
