"""LoCoMo data layer and scoring (snap-research/LoCoMo, data/locomo10.json).

Scoring follows the official ``task_eval/evaluation.py`` (commit 0e22967):
``normalize_answer`` (drop ',', lower-case, strip ``string.punctuation``, blank the
words a/an/the/and, collapse whitespace); ``f1_score`` (token F1 over Porter-stemmed
tokens; nltk is not available, so ``porter_stem`` ports nltk/stem/porter.py in its
default NLTK_EXTENSIONS mode, irregular forms included); and, per category, as in
``eval_question_answering``: 1 -> ``f1`` (prediction and answer split on ',', mean
over answer parts of the best prediction part), 2 and 4 -> ``f1_score``, 3 ->
``f1_score`` against ``answer.split(';')[0].strip()``, 5 -> 1 if the lower-cased
prediction contains 'no information available' or 'not mentioned', else 0 (the
official prompt offers "(a) Not mentioned in the conversation (b) <adversarial
answer>"; a free-form "I don't know" scores 0). Retrieval recall, also from
``eval_question_answering``: ``sum(ev in context_ids for ev in evidence) /
len(evidence)``, 1 when evidence is empty. ``task_eval/evaluation_stats.py``
averages these per category (sum / count).

Deviations: ``re``'s ``\\b`` instead of the ``regex`` module's (same on ordinary
text); evidence is normalised by ``parse_evidence`` before recall (officially a
malformed id such as "D8:6; D9:17" never matches); the official session-level
recall (context ids starting with 'S') is not implemented.

Loading: sessions are the ``session_N`` lists in numeric order of N (conv-26 has
date keys for 35 sessions, turns for 19); ``Turn.time`` is ``session_N_date_time``
verbatim. A turn that shares a photo gets `` [shares a photo: <blip_caption>]``
appended to its text: 11 answers (e.g. "a cup with a dog face on it") occur only
in a caption, and the official prompts likewise append "and shared <caption>".
Integer answers are cast with ``str``; category-5 questions keep
``adversarial_answer`` and take ``answer`` if present (two in conv-26), else "".
The generated ``observation`` facts (``session_N_observation``: speaker -> list of
``[text, evidence]``, evidence a string or, 3 times, a list) are kept as
``Sample.observations`` for benchmarks that need memory-like texts; they are
optional and read leniently (a malformed entry is skipped, never an error), and
only for sessions that have turns.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from anima.errors import BadInput

CATEGORY_NAMES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
NOT_AVAILABLE_PHRASES = ("no information available", "not mentioned")  # category 5


@dataclass(frozen=True)
class Turn:
    speaker: str
    dia_id: str
    text: str
    session: int
    time: str


@dataclass(frozen=True)
class Session:
    index: int
    time: str
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    category: int
    evidence: tuple[str, ...]
    adversarial_answer: str | None


@dataclass(frozen=True)
class Observation:
    """A generated fact about one speaker, from one session, with the turns it rests on."""

    speaker: str
    text: str
    session: int
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class Sample:
    sample_id: str
    speaker_a: str
    speaker_b: str
    sessions: tuple[Session, ...]
    questions: tuple[Question, ...]
    observations: tuple[Observation, ...] = ()

    @property
    def turns(self) -> tuple[Turn, ...]:
        """All turns, sessions in order."""
        return tuple(t for s in self.sessions for t in s.turns)


# ----------------------------------------------------------------------------- loading
_SESSION_KEY = re.compile(r"session_(\d+)")
_EVIDENCE_ID = re.compile(r"D:?(\d+):(\d+)")


def parse_evidence(raw: list[str]) -> tuple[str, ...]:
    """Normalise evidence ids: split on ';', ',', whitespace; "D:11:26" -> "D11:26";
    drop pieces that are not an id ("D"); drop duplicates, keeping order.
    Ids pointing at turns that do not exist (e.g. "D10:19" in conv-42) are kept."""
    out: list[str] = []
    for item in raw:
        for piece in re.split(r"[;,\s()]+", str(item)):
            m = _EVIDENCE_ID.fullmatch(piece)
            if m and f"D{m[1]}:{m[2]}" not in out:
                out.append(f"D{m[1]}:{m[2]}")
    return tuple(out)


class NotLoCoMo(BadInput, ValueError):
    """The file is not LoCoMo-shaped: one line for the user, a ValueError for callers."""


def _need(obj: dict, key: str, kind: type | tuple[type, ...], where: str):
    if not isinstance(obj, dict) or key not in obj or not isinstance(obj[key], kind):
        raise NotLoCoMo(f"not a LoCoMo file: {where} lacks a valid {key!r}")
    return obj[key]


def _load_sample(raw: dict, where: str) -> Sample:
    sample_id = _need(raw, "sample_id", str, where)
    where = f"{where} ({sample_id})"
    conv = _need(raw, "conversation", dict, where)
    numbers = sorted(int(m[1]) for k in conv if (m := _SESSION_KEY.fullmatch(k)))
    if not numbers:
        raise NotLoCoMo(f"not a LoCoMo file: {where} has no session_N turn lists")
    sessions = []
    for n in numbers:
        time = _need(conv, f"session_{n}_date_time", str, where)
        turns = []
        for i, t in enumerate(_need(conv, f"session_{n}", list, where)):
            tw = f"{where} session_{n}[{i}]"
            text = _need(t, "text", str, tw)
            if t.get("blip_caption"):
                text += f" [shares a photo: {t['blip_caption']}]"
            turns.append(Turn(_need(t, "speaker", str, tw), _need(t, "dia_id", str, tw), text, n, time))
        sessions.append(Session(n, time, tuple(turns)))
    questions = []
    for i, q in enumerate(_need(raw, "qa", list, where)):
        qw = f"{where} qa[{i}]"
        category = _need(q, "category", int, qw)
        if category not in CATEGORY_NAMES:
            raise NotLoCoMo(f"not a LoCoMo file: {qw} has unknown category {category}")
        if category != 5:
            _need(q, "answer", (str, int, float), qw)
        adversarial = q.get("adversarial_answer")
        questions.append(
            Question(
                question=_need(q, "question", str, qw),
                answer=str(q.get("answer", "")),
                category=category,
                evidence=parse_evidence(_need(q, "evidence", list, qw)),
                adversarial_answer=None if adversarial is None else str(adversarial),
            )
        )
    return Sample(
        sample_id,
        _need(conv, "speaker_a", str, where),
        speaker_b=_need(conv, "speaker_b", str, where),
        sessions=tuple(sessions),
        questions=tuple(questions),
        observations=_observations(raw.get("observation"), numbers),
    )


def _observations(raw, numbers: list[int]) -> tuple[Observation, ...]:
    """The optional generated facts, sessions in order; malformed entries are skipped."""
    if not isinstance(raw, dict):
        return ()
    found = []
    for n in numbers:
        by_speaker = raw.get(f"session_{n}_observation")
        for speaker, items in by_speaker.items() if isinstance(by_speaker, dict) else ():
            for item in items if isinstance(items, list) else ():
                if isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and item[0].strip():
                    evidence = item[1] if isinstance(item[1], list) else [item[1]]
                    found.append(Observation(str(speaker), item[0].strip(), n, parse_evidence(evidence)))
    return tuple(found)


def load_locomo(path: Path) -> list[Sample]:
    """Load a LoCoMo JSON file (a list of samples). NotLoCoMo if it is not LoCoMo-shaped."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        raise BadInput(
            f"no LoCoMo file at {path}", "give --data a LoCoMo JSON file, e.g. ../shared/data/locomo/locomo_dev.json"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise NotLoCoMo(f"not a LoCoMo file: {path} is not valid JSON ({e})") from None
    if not isinstance(data, list) or not data:
        raise NotLoCoMo(f"not a LoCoMo file: {path} must hold a non-empty JSON list of samples")
    return [_load_sample(s, f"{path}: sample {i}") for i, s in enumerate(data)]


# ----------------------------------------------------------------------------- Porter stemmer
_IRREGULAR = {
    "skies": "sky",
    "dying": "die",
    "lying": "lie",
    "tying": "tie",
    "innings": "inning",
    "outings": "outing",
    "cannings": "canning",
}  # + identity for sky, news, inning, ...
_IRREGULAR.update((w, w) for w in "sky news inning outing canning howe proceed exceed succeed".split())


def _cv(w: str) -> str:
    """'c'/'v' per letter; 'y' is a consonant at the start or after a vowel."""
    out = ""
    for i, ch in enumerate(w):
        out += "v" if ch in "aeiou" or (ch == "y" and i > 0 and out[-1] == "c") else "c"
    return out


def _m(w: str) -> int:
    return _cv(w).count("vc")


def _cvc(w: str) -> bool:
    cv = _cv(w)
    return (len(w) >= 3 and cv[-3:] == "cvc" and w[-1] not in "wxy") or cv == "vc"


def _rules(w: str, rules, cond) -> str:
    """Apply the first rule whose suffix matches (and stop there, as nltk does)."""
    for suffix, repl in rules:
        if w.endswith(suffix):
            stem = w[: len(w) - len(suffix)]
            return stem + repl if cond(stem) else w
    return w


_STEP2 = [
    ("ational", "ate"),
    ("tional", "tion"),
    ("enci", "ence"),
    ("anci", "ance"),
    ("izer", "ize"),
    ("bli", "ble"),
    ("alli", "al"),
    ("entli", "ent"),
    ("eli", "e"),
    ("ousli", "ous"),
    ("ization", "ize"),
    ("ation", "ate"),
    ("ator", "ate"),
    ("alism", "al"),
    ("iveness", "ive"),
    ("fulness", "ful"),
    ("ousness", "ous"),
    ("aliti", "al"),
    ("iviti", "ive"),
    ("biliti", "ble"),
    ("fulli", "ful"),
]
_STEP3 = [("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"), ("ical", "ic"), ("ful", ""), ("ness", "")]
_STEP4 = [
    "al",
    "ance",
    "ence",
    "er",
    "ic",
    "able",
    "ible",
    "ant",
    "ement",
    "ment",
    "ent",
    "ion",
    "ou",
    "ism",
    "ate",
    "iti",
    "ous",
    "ive",
    "ize",
]


def _step2(w: str) -> str:
    if w.endswith("alli") and _m(w[:-4]) > 0:
        return _step2(w[:-4] + "al")
    if w.endswith("logi"):  # no other step-2 suffix ends in "gi", so order is moot
        return w[:-1] if _m(w[:-3]) > 0 else w  # nltk: the 'l' counts with the stem
    return _rules(w, _STEP2, lambda s: _m(s) > 0)


def _step4(w: str) -> str:
    for suffix in _STEP4:
        if w.endswith(suffix):
            s = w[: -len(suffix)]
            return s if _m(s) > 1 and (suffix != "ion" or s[-1] in "st") else w
    return w


def porter_stem(word: str) -> str:
    """nltk ``PorterStemmer().stem`` (NLTK_EXTENSIONS mode)."""
    w = word.lower()
    if w in _IRREGULAR:
        return _IRREGULAR[w]
    if len(w) <= 2:
        return w
    # step 1a
    w = (
        w[:-3] + "ie"
        if w.endswith("ies") and len(w) == 4
        else _rules(w, [("sses", "ss"), ("ies", "i"), ("ss", "ss"), ("s", "")], lambda s: True)
    )
    # step 1b
    if w.endswith("ied"):
        w = w[:-3] + ("ie" if len(w) == 4 else "i")
    elif w.endswith("eed"):
        w = w[:-1] if _m(w[:-3]) > 0 else w
    else:
        for suffix in ("ed", "ing"):
            if w.endswith(suffix) and "v" in _cv(w[: -len(suffix)]):
                w = w[: -len(suffix)]
                if w.endswith(("at", "bl", "iz")):
                    w += "e"
                elif len(w) >= 2 and w[-1] == w[-2] and _cv(w)[-1] == "c":
                    w = w if w[-1] in "lsz" else w[:-1]
                elif _m(w) == 1 and _cvc(w):
                    w += "e"
                break
    # step 1c
    if w.endswith("y") and len(w) > 2 and _cv(w[:-1])[-1] == "c":
        w = w[:-1] + "i"
    w = _step2(w)
    w = _rules(w, _STEP3, lambda s: _m(s) > 0)
    w = _step4(w)
    # step 5a, 5b
    if w.endswith("e") and (_m(w[:-1]) > 1 or (_m(w[:-1]) == 1 and not _cvc(w[:-1]))):
        w = w[:-1]
    if w.endswith("ll") and _m(w[:-1]) > 1:
        w = w[:-1]
    return w


# ----------------------------------------------------------------------------- scoring
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Official ``normalize_answer``: note it also removes the word 'and'."""
    s = s.replace(",", "").lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = re.sub(r"\b(a|an|the|and)\b", " ", s)
    return " ".join(s.split())


def f1_score(prediction: str, ground_truth: str) -> float:
    """Official ``f1_score``: token F1 over stemmed, normalised tokens (0 if none shared)."""
    pred = [porter_stem(w) for w in normalize_answer(prediction).split()]
    truth = [porter_stem(w) for w in normalize_answer(ground_truth).split()]
    same = sum((Counter(pred) & Counter(truth)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(truth)
    return 2 * precision * recall / (precision + recall)


def multi_answer_f1(prediction: str, ground_truth: str) -> float:
    """Official ``f1`` (category 1): mean over ','-separated answer parts of the best
    F1 against any ','-separated prediction part."""
    preds = [p.strip() for p in prediction.split(",")]
    truths = [g.strip() for g in ground_truth.split(",")]
    return sum(max(f1_score(p, g) for p in preds) for g in truths) / len(truths)


def answer_f1(prediction: str, answer: str, category: int) -> float:
    """Score one prediction as the official ``eval_question_answering`` does."""
    if category == 1:
        return multi_answer_f1(prediction, answer)
    if category in (2, 4):
        return f1_score(prediction, answer)
    if category == 3:
        return f1_score(prediction, answer.split(";")[0].strip())
    if category == 5:
        return float(any(p in prediction.lower() for p in NOT_AVAILABLE_PHRASES))
    raise ValueError(f"unknown LoCoMo category {category!r}")


def recall_at_k(retrieved_dia_ids: list[str], evidence: tuple[str, ...], k: int) -> float:
    """Fraction of evidence ids among the first k retrieved ids. Empty evidence gives
    1.0, as in the official code (which appends 1 for such questions); callers that
    average recall should skip those questions rather than count them as hits."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not evidence:
        return 1.0
    top = set(retrieved_dia_ids[:k])
    return sum(ev in top for ev in evidence) / len(evidence)
