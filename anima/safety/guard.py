"""The guard: every message in and every reply out gets a verdict.

    rules       empty text is safe; a long text is read by its start and end
    layer 1     the trained head (n-grams + embedding): milliseconds, always runs
    layer 2     the LLM in the Llama Guard format, only when layer 1 is unsure
    refusal     how likely the chat model's own reply to a user's message opens with a
                refusal (`refusal.py`): read on the prompt the reply reads next
    probe       a head on the chat model's state after a middle block, taken from that
                same reading (`probe.py`): free in a turn
    policy      per-category action: block, warn or allow

Over-refusal is a defect too: layer 1's threshold is chosen for at most 6% false
positives, and a category can be set to "warn" (answer, but note it) instead of "block".
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

from anima.models.base import ChatModel, Message
from anima.safety.classifier import Embed, Head
from anima.safety.injection import InjectionDetector
from anima.safety.llm_guard import LLMGuard
from anima.safety.refusal import refusal_probability
from anima.safety.taxonomy import ALTERNATIVES, CATEGORIES

Action = Literal["allow", "warn", "block"]


@dataclass
class Verdict:
    safe: bool
    categories: list[str] = field(default_factory=list)
    score: float = 0.0  # P(unsafe) from the layer that decided
    layer: str = "rules"  # rules | classifier | llm | refusal | probe | off
    latency_ms: float = 0.0
    action: Action = "allow"
    injection: float = 0.0  # how much the text reads like a jailbreak or injected instruction
    layers_ms: dict[str, float] = field(default_factory=dict)
    # the fast (or LLM) layer would have blocked, and left it to the chat model's reading
    deferred: bool = field(default=False, repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["deferred"]
        d["score"], d["latency_ms"], d["injection"] = (
            round(self.score, 4),
            round(self.latency_ms, 2),
            round(self.injection, 4),
        )
        d["layers_ms"] = {k: round(v, 2) for k, v in self.layers_ms.items()}
        return d


def on_scale(p: float, threshold: float, cut: float) -> float:
    """`p`, a score whose own threshold is `threshold`, on a scale where `cut` is the
    threshold (piecewise linear: 0, threshold and 1 land on 0, cut and 1)."""
    if p >= threshold:
        return cut + (1 - cut) * (p - threshold) / max(1 - threshold, 1e-9)
    return p * cut / max(threshold, 1e-9)


def refusal(verdict: Verdict) -> str:
    """Short, names the category, offers what the assistant can do instead."""
    code = verdict.categories[0] if verdict.categories else ""
    name = CATEGORIES.get(code, "unsafe content")
    other = ALTERNATIVES.get(code, "I can help with a safer version of the request.")
    return f"I can't help with that: it falls under {code + ' ' if code else ''}{name}. {other}"


@dataclass
class Guard:
    head: Head | None
    embed: Embed | None
    llm: LLMGuard | None = None
    policy: dict[str, Action] = field(default_factory=dict)
    layer2: Literal["auto", "off", "always"] = "auto"
    threshold: float | None = None  # overrides the head's trained threshold
    llm_bias: float = 0.0  # subtracted from the logit gap "unsafe" - "safe" before the sigmoid
    injection: InjectionDetector | None = None
    llm_share: float = 0.05  # about this share of messages (the least certain) go to the LLM layer
    refusal_model: ChatModel | None = None  # the chat model, whose own refusals are a vote
    refusal_threshold: float = 0.3  # P(its reply opens with a refusal) at which a message is unsafe
    refusal_system: str = ""  # the system prompt a message is read with when checked on its own
    probe: Head | None = None  # reads refusal_model's state after block `probe_layer` (`probe.py`)
    probe_layer: int = 14
    probe_threshold: float | None = None  # overrides the probe's trained threshold
    # With the probe, the fast layer blocks a user's message on its own only from this
    # score; below it the chat model's reading (probe and refusal vote) decides
    probe_fast_block: float = 0.9
    # Reads the assistant's replies: trained on the model's own replies besides the
    # requests (`data.replies`). Without it the request head reads them.
    reply_head: Head | None = None
    reply_threshold: float | None = None  # overrides the reply head's trained threshold

    def check(
        self,
        text: str,
        role: Literal["user", "assistant"] = "user",
        layer2: str | None = None,
        vote: bool = True,
    ) -> Verdict:
        """A verdict on `text`. A user's message also gets the refusal vote
        (`second_look`), read on the message alone after `refusal_system`, unless
        `vote` is off (a turn asks for it on its real prompt) or layer2 is "off"."""
        start = time.perf_counter()
        layer2 = layer2 or self.layer2
        verdict = self._check(text, role, layer2)
        if role == "user" and vote and layer2 != "off":
            head = [{"role": "system", "content": self.refusal_system}] if self.refusal_system else []
            verdict = self.second_look(verdict, text, head + [{"role": "user", "content": text}])
        verdict.latency_ms = (time.perf_counter() - start) * 1000
        return verdict

    def second_look(
        self, verdict: Verdict, text: str, messages: list[Message], tools: list[dict] | None = None
    ) -> Verdict:
        """The chat model's own reading of a message the other layers let through, on
        the prompt its reply reads next (`messages`): unsafe when its reply would open
        with a refusal at least `refusal_threshold` of the time, or when the probe on
        its state after that reading scores at least the probe's threshold. Each score
        is mapped so that its threshold lands on the head's (one scale for ranking).
        With the probe, the fast layer has blocked on its own only from
        `probe_fast_block`: below that, this reading decides (the probe ranks and
        separates better; chosen on validation, see README)."""
        if self.refusal_model is None or not verdict.safe or self.layer2 == "off":
            return verdict
        t = time.perf_counter()
        p = refusal_probability(self.refusal_model, messages, tools, self.refusal_threshold)
        took = (time.perf_counter() - t) * 1000
        verdict.layers_ms["refusal"] = took
        verdict.latency_ms += took
        cut = self.threshold if self.threshold is not None else self.head.threshold if self.head else 0.5
        votes = {"refusal": (on_scale(p, self.refusal_threshold, cut), [])} if p is not None else {}
        probed = self.probe is not None and p is not None  # p is None: the prompt was not read
        if probed:
            t = time.perf_counter()
            state = self.refusal_model.hidden_state(messages, tools, self.probe_layer)  # type: ignore[attr-defined]
            q, cats = self.probe.score([text], state[None, :])
            tp = self.probe_threshold if self.probe_threshold is not None else self.probe.threshold
            votes["probe"] = (on_scale(float(q[0]), tp, cut), cats[0][:1])
            took = (time.perf_counter() - t) * 1000
            verdict.layers_ms["probe"] = took
            verdict.latency_ms += took
        if verdict.deferred and not probed:  # left to a reading that did not happen: it blocks after all
            cats = self.head.score_texts([text], self.embed)[1][0] if self.head else []
            votes[verdict.layer] = (max(verdict.score, cut), cats)
        if not votes:
            return verdict
        layer = max(votes, key=lambda k: votes[k][0])
        score, cats = votes[layer]
        if score < cut:
            # with the probe, the model's reading ranks the message (the better ranker)
            verdict.score = score if probed else max(verdict.score, score)
            return verdict
        if not cats and self.head is not None:
            cats = self.head.score_texts([text], self.embed)[1][0][:1]
        out = self._decide(True, cats, score=score, layer=layer, layers=verdict.layers_ms, inj=verdict.injection)
        out.latency_ms = verdict.latency_ms
        return out

    def check_fast(self, text: str, role: Literal["user", "assistant"] = "user") -> Verdict:
        """Layer 1 only: for re-reading a reply while it streams."""
        return self.check(text, role, "off")

    def _check(self, text: str, role: str, layer2: str) -> Verdict:
        if not text or not text.strip():
            return Verdict(True, layer="rules")
        layers: dict[str, float] = {}
        inj = 0.0
        if self.injection is not None and role == "user":
            t = time.perf_counter()
            inj = self.injection.jailbreak(text)
            layers["injection"] = (time.perf_counter() - t) * 1000
        if self.head is None:
            if self.llm is None or layer2 == "off":
                return Verdict(True, layer="off", injection=inj, layers_ms=layers)
            return self._llm(text, role, p1=None, cats1=[], layers=layers, inj=inj)
        t = time.perf_counter()
        head, threshold = self.head, self.threshold
        if role == "user":  # pieces find a request inside a long message (validated on requests only)
            p1, cats1 = head.score_long(text, self.embed)
        else:
            if self.reply_head is not None:
                head, threshold = self.reply_head, self.reply_threshold
            p, cats = head.score_texts([text], self.embed)
            p1, cats1 = float(p[0]), cats[0]
        layers["classifier"] = (time.perf_counter() - t) * 1000
        threshold = threshold if threshold is not None else head.threshold
        lo, hi = head.band_for(self.llm_share, threshold)
        # Where the probe reads a user's message, "auto" does not ask the LLM layer when its
        # score, averaged with p1, could not reach `probe_fast_block`: that verdict would be
        # left to the probe's reading anyway (`_defer`, `second_look`). It cost ~1 s.
        moot = self._probed(role, layer2) and (p1 + 1) / 2 < self.probe_fast_block
        unsure = lo < p1 < hi and not moot
        if self.llm is not None and (layer2 == "always" or (layer2 == "auto" and unsure)):
            return self._llm(text, role, p1=p1, cats1=cats1, layers=layers, inj=inj)
        unsafe = p1 >= threshold
        verdict = self._decide(unsafe, cats1 if unsafe else [], score=p1, layer="classifier", layers=layers, inj=inj)
        return self._defer(verdict, role, layer2)

    def _defer(self, verdict: Verdict, role: str, layer2: str) -> Verdict:
        """With the probe, a user's message the fast or LLM layer flags below
        `probe_fast_block` is left to the chat model's reading (`second_look`)."""
        if not self._probed(role, layer2) or verdict.safe or verdict.score >= self.probe_fast_block:
            return verdict
        return Verdict(
            True,
            [],
            verdict.score,
            verdict.layer,
            injection=verdict.injection,
            layers_ms=verdict.layers_ms,
            deferred=True,
        )

    def _probed(self, role: str, layer2: str) -> bool:
        """Whether the chat model's reading (probe and refusal vote) will judge this message."""
        return self.probe is not None and self.refusal_model is not None and role == "user" and layer2 != "off"

    def _llm(
        self, text: str, role: str, p1: float | None, cats1: list[str], layers: dict[str, float], inj: float
    ) -> Verdict:
        assert self.llm is not None
        t = time.perf_counter()
        gap, cats2 = self.llm.score(text, "User" if role == "user" else "Agent")
        layers["llm"] = (time.perf_counter() - t) * 1000
        p2 = 1 / (1 + math.exp(-(gap - self.llm_bias)))
        # Layer 1 is unsure here: the two votes are averaged.
        p = p2 if p1 is None else (p1 + p2) / 2
        unsafe = p >= 0.5
        verdict = self._decide(unsafe, (cats2 or cats1) if unsafe else [], score=p, layer="llm", layers=layers, inj=inj)
        return self._defer(verdict, role, "auto")

    def _decide(
        self, unsafe: bool, cats: list[str], score: float, layer: str, layers: dict[str, float], inj: float
    ) -> Verdict:
        if not unsafe:
            return Verdict(True, [], score, layer, action="allow", injection=inj, layers_ms=layers)
        actions = [self.policy.get(c, "block") for c in cats] or ["block"]
        action: Action = "block" if "block" in actions else "warn" if "warn" in actions else "allow"
        return Verdict(False, cats, score, layer, action=action, injection=inj, layers_ms=layers)
