"""Prompt injection: instructions hidden in text that should be data (tool results,
documents, web pages, stored memories), and jailbreak framing in the user's own text.

Two signals, per sentence, the larger wins:
- rules: the phrasings attacks keep reusing ("ignore previous instructions", "you are
  now", "developer mode", chat-template tokens, ...);
- a head (same features as the guard's layer 1) trained to tell instructions aimed at
  an AI from the sentences of ordinary emails and answers (BIPIA's attack instructions
  against its clean contexts).
`neutralise` removes the flagged sentences before the model sees the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from anima.safety.classifier import Embed, Head

_RULES = [
    (
        r"\b(ignore|disregard|forget|override|bypass)\b.{0,40}\b(instructions?|rules|guidelines|prompts?|polic(y|ies)|directives?|restrictions)\b",
        0.95,
    ),
    (r"\b(new|updated|real|actual|hidden|secret)\s+(instructions?|task|system prompt)\b", 0.8),
    (
        (
            r"\byou are now\b|\bfrom now on,? you\b|\bpretend (to be|you are)\b|\bact as (an? "
            r")?(unrestricted|unfiltered|evil|jailbroken)"
        ),
        0.85,
    ),
    (r"\b(developer|god|jailbreak|dan|unrestricted|unfiltered) mode\b|\bdo anything now\b|\bjailbr(eak|oken)\b", 0.95),
    (
        r"\b(no|without( any)?) (ethical|moral|safety|content) (guidelines|restrictions|filters|limits|constraints)\b",
        0.9,
    ),
    (r"(system prompt|your (initial|original|hidden) (prompt|instructions))", 0.8),
    (r"<\|im_start\|>|<\|im_end\|>|<\|start_header_id\|>|\[/?INST\]|<<SYS>>|^#{2,}\s*(system|instruction)s?\b", 0.95),
    (
        (
            r"\b(assistant|ai|chatbot|language model|llm)\b[,:]?\s+(please\s+)?(must|should|now|always|never|do "
            r"not|don't|will)\b"
        ),
        0.75,
    ),
    (r"\b(do not|don't|never) (tell|inform|mention|reveal).{0,30}\b(user|anyone)\b", 0.85),
    (r"\b(respond|reply|answer)\s+(only\s+)?with\b|\binstead,? (say|write|reply|respond|tell)\b", 0.7),
    (
        (
            r"\b(send|forward|email|post|upload|exfiltrate)\b.{0,40}\b(password|credentials|api "
            r"key|cookies?|secrets?|private key)\b"
        ),
        0.85,
    ),
]
_COMPILED = [(re.compile(p, re.IGNORECASE | re.MULTILINE), w) for p, w in _RULES]
_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
MAX_SEGMENTS = 64


def segments(text: str) -> list[str]:
    parts = [p.strip() for p in _SPLIT.split(text) if p and len(p.strip()) > 3]
    return parts[:MAX_SEGMENTS]


def rule_score(text: str) -> float:
    return max((w for rx, w in _COMPILED if rx.search(text)), default=0.0)


@dataclass
class InjectionDetector:
    head: Head | None = None
    embed: Embed | None = None
    threshold: float = 0.5

    def segment_scores(self, text: str, learned_too: bool = True) -> list[tuple[str, float]]:
        segs = segments(text)
        if not segs:
            return []
        learned = np.zeros(len(segs))
        if self.head is not None and learned_too:
            learned = self.head.score_texts(segs, self.embed)[0]
        return [(s, max(rule_score(s), float(p))) for s, p in zip(segs, learned)]

    def score(self, text: str) -> float:
        """How much the text carries an instruction aimed at the assistant (0..1)."""
        return max((s for _, s in self.segment_scores(text)), default=0.0)

    def jailbreak(self, text: str) -> float:
        """For the user's own text, where requests are expected: the rules only."""
        return max((rule_score(s) for s in segments(text)), default=0.0)

    def neutralise(
        self,
        text: str,
        learned_too: bool = True,
        note: Callable[[str], str] = lambda s: "[removed by anima: an instruction inside data]",
    ) -> tuple[str, list[str]]:
        """The text with flagged sentences replaced, and the sentences removed.
        `learned_too=False` uses the rules only: for the user's own words (remembered
        messages and what was learned from them), which are requests by nature and
        which the head, trained to spot requests inside data, would strip."""
        found = [s for s, p in self.segment_scores(text, learned_too) if p >= self.threshold]
        for s in found:
            text = text.replace(s, note(s))
        return text, found
