"""Prompt injection: instructions hidden in text that should be data (tool results,
documents, web pages, stored memories), and jailbreak framing in the user's own text.

Per sentence, the largest of:
- rules: the phrasings attacks keep reusing ("ignore previous instructions", "you are
  now", "developer mode", chat-template tokens, ...);
- in data only: a head (same features as the guard's layer 1) trained to tell
  instructions aimed at an AI from the sentences of ordinary emails and answers
  (BIPIA's attack instructions against its clean contexts), discounted by how well the
  sentence fits the rest of the text (an inserted instruction is off-topic; a to-do in
  a to-do list is not); text about "your answer" or "your reply" or what to tell "the
  user" (it is aimed at whoever writes the reply); and a question, or a sentence about
  "the user", off the text's topic.
`neutralise` removes the flagged sentences before the model sees the text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from anima.safety.classifier import Embed, Head, embed_start

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
# Rules for data only (a user's own words may say "in your answer, use bullet points").
# Data that talks about the reply its reader will write, or tells its reader what to
# tell the user, is talking to the assistant.
_DATA_RULES = [
    (
        r"\byour (answers?|repl(y|ies)|responses?|outputs?|summary|summaries)\b"
        r"|\b(answer|reply|respond)\b.{0,20}\b(in|using|with|without)\b.{0,30}"
        r"\b(language|letters|numbers|symbols|spaces|emojis?|cipher|format)\b",
        0.9,
    ),
    (
        r"\b(tell|ask|inform|notify|remind|convince|persuade|warn|advise|urge)\s+(the|this|every|any|each)\s+"
        r"(user|reader)s?\b|\bwhoever (reads|is reading)\b|\bany \w+ you (produce|generate|write)\b"
        r"|\b(the|any|every|each)\s+(ai|assistant|agent|llm|chatbot|bot)s?\s+"
        r"(reading|processing|that reads|who reads)\b",
        0.9,
    ),
    (r"\b(whatever|regardless of what|no matter what)\b.{0,30}\b(says?|said|shows?|wrote|writes)\b", 0.8),
]
_DATA_COMPILED = [(re.compile(p, re.IGNORECASE), w) for p, w in _DATA_RULES]
# Off the text's topic (cosine to the rest below the bar), in a text of at least
# OFF_TOPIC_TEXT sentences (in a short email the question is the email): a question, or
# a sentence about "the user" in the third person.
OFF_TOPIC_TEXT, OFF_TOPIC_SCORE = 4, 0.6
_OFF_TOPIC = [(re.compile(r"\?$"), 0.15), (re.compile(r"\bthe user('s|s)?\b", re.IGNORECASE), 0.3)]
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
MAX_SEGMENTS = 64


def segments(text: str) -> list[str]:
    parts = [p.strip() for p in SENTENCE_BREAK.split(text) if p and len(p.strip()) > 3]
    return parts[:MAX_SEGMENTS]


def rule_score(text: str) -> float:
    return max((w for rx, w in _COMPILED if rx.search(text)), default=0.0)


def coherence(emb: np.ndarray) -> np.ndarray:
    """How well each sentence fits the others: the cosine of its embedding to the mean of
    the rest (0 when there is no rest, or no embedding)."""
    if len(emb) < 2:
        return np.zeros(len(emb))
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if not norms.all():
        return np.zeros(len(emb))
    unit = emb / norms
    rest = unit.sum(0) - unit
    rest /= np.maximum(np.linalg.norm(rest, axis=1, keepdims=True), 1e-9)
    return (unit * rest).sum(1)


@dataclass
class InjectionDetector:
    head: Head | None = None
    embed: Embed | None = None
    threshold: float = 0.45  # chosen on BIPIA leave-attack-type-out CV (validation): FPR 0.020 there

    def segment_scores(self, text: str, learned_too: bool = True) -> list[tuple[str, float]]:
        segs = segments(text)
        if not segs:
            return []
        learned = np.zeros(len(segs))
        if self.head is not None and learned_too:
            emb = embed_start(self.embed, segs, self.head.v.shape[0])
            fit = coherence(emb)
            learned = self.head.score(segs, emb, categories=False)[0] * (1 - np.clip(fit, 0, 1))
            for i, s in enumerate(segs):
                rules = [w for rx, w in _DATA_COMPILED if rx.search(s)]
                if len(segs) >= OFF_TOPIC_TEXT:
                    rules += [OFF_TOPIC_SCORE for rx, bar in _OFF_TOPIC if fit[i] < bar and rx.search(s)]
                learned[i] = max([learned[i], *rules])
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
