"""Layer 1: a linear head over hashed n-grams and a sentence embedding.

Trained here, in seconds, from public labelled data (`anima guard train`); the weights
are a pure function of the data and this code: full-batch optimisation from zeros,
no random state. Scores any message in a few milliseconds on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from anima.errors import ModelCorrupt, ModelNotFound
from anima.safety import features
from anima.safety.data import Example
from anima.safety.taxonomy import CATEGORIES

EMBED_CHARS = 256  # the embedding sees the start of a message: ~60 tokens keep it fast
# That embedding is layer 1's cost: llama.cpp's MiniLM reads 256 characters (~55 tokens) in
# ~20 ms on 2 cores (~0.36 ms a token; 1 or 2 threads, F16 or Q8_0 weights alike), so a
# message read whole and in two pieces took ~60 ms; the guard's MiniLM in ONNX Runtime with
# int8 products (`anima.models.onnx_embed`) takes ~4 ms. Tried and left (2026-12-06): a static table
# distilled from MiniLM (each of its 30,522 tokens embedded alone, weighted by vocabulary
# rank as model2vec does; 0.05 ms a message), heads retrained on it. Validation: the
# contrast set F1 0.915 -> 0.870, FPR 0.025 -> 0.058; the injection detector
# (own_words_test.csv + injection_validation_attacks.txt) F1 0.940 -> 0.588.
FOLD = 1 << 14  # the category heads read the n-grams folded into this many slots
CODES = list(CATEGORIES)
FORMAT = 2
# A piece of a long message counts as unsafe above threshold + (1 - threshold) * this.
# Chosen on validation data (scripts/guard_pieces.py, heads of f31edd6): the 400 rows of
# tests/data/guard_contrast_validation.csv each wrapped in a long template, and 255
# windows of LoCoMo chat. Harmful wrapped rows caught / harmless wrapped rows flagged /
# chat windows flagged: whole message only 0.325 / 0.042 / 0.004; pieces at the
# threshold (0) 0.938 / 0.179 / 0.043; 0.5: 0.850 / 0.058 / 0.024; 0.7: 0.719 / 0.050 /
# 0.004; 0.9: 0.487 / 0.042 / 0.004.
PIECE_MARGIN = 0.7
# Pieces of a longer message are ranked by their n-grams and only these many embedded
# (8: the same validation figures, the public test split's fast p95 150 ms instead of 98).
EMBEDDED_PIECES = 4

Embed = Callable[[list[str]], list[list[float]]]


@dataclass
class Rows:
    """A batch of examples as sparse n-gram rows plus dense embeddings."""

    row: np.ndarray  # row id of each non-zero
    col: np.ndarray
    val: np.ndarray
    emb: np.ndarray  # (n, d)

    @property
    def n(self) -> int:
        return len(self.emb)

    def dot(self, w: np.ndarray, v: np.ndarray, fold: bool = False) -> np.ndarray:
        col = self.col & (FOLD - 1) if fold else self.col
        return np.bincount(self.row, weights=self.val * w[col], minlength=self.n) + self.emb @ v

    def grad(self, r: np.ndarray, size: int, fold: bool = False) -> tuple[np.ndarray, np.ndarray]:
        col = self.col & (FOLD - 1) if fold else self.col
        return np.bincount(col, weights=self.val * r[self.row], minlength=size), self.emb.T @ r


def rows(texts: Sequence[str], idf: np.ndarray, embeddings: np.ndarray) -> Rows:
    parts = [features.vector(t, idf) for t in texts]
    lengths = [len(i) for i, _ in parts]
    return Rows(
        np.repeat(np.arange(len(texts)), lengths),
        np.concatenate([i for i, _ in parts]) if parts else np.zeros(0, np.int64),
        np.concatenate([v for _, v in parts]).astype(np.float64) if parts else np.zeros(0),
        np.asarray(embeddings, np.float64).reshape(len(texts), -1),
    )


def _fit(
    x: Rows, y: np.ndarray, size: int, fold: bool, weight: np.ndarray, l2: float, steps: int = 300
) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted logistic regression by full-batch Adam from zeros (deterministic)."""
    w, v, b = np.zeros(size), np.zeros(x.emb.shape[1]), 0.0
    m = [np.zeros(size), np.zeros_like(v), 0.0]
    s = [np.zeros(size), np.zeros_like(v), 0.0]
    total = weight.sum()
    lr, b1, b2 = 0.05, 0.9, 0.999
    for t in range(1, steps + 1):
        p = 1 / (1 + np.exp(-(x.dot(w, v, fold) + b)))
        r = weight * (p - y) / total
        gw, gv = x.grad(r, size, fold)
        grads = [gw + l2 * w, gv + l2 * v, r.sum()]
        for k, g in enumerate(grads):
            m[k] = b1 * m[k] + (1 - b1) * g
            s[k] = b2 * s[k] + (1 - b2) * g * g
        step = [lr * (m[k] / (1 - b1**t)) / (np.sqrt(s[k] / (1 - b2**t)) + 1e-8) for k in range(3)]
        w, v, b = w - step[0], v - step[1], b - step[2]
    return w, v, float(b)


@dataclass
class Head:
    idf: np.ndarray
    w: np.ndarray
    v: np.ndarray
    b: float
    cat_w: np.ndarray  # (len(CODES), FOLD)
    cat_v: np.ndarray  # (len(CODES), d)
    cat_b: np.ndarray
    threshold: float = 0.5
    manifest: dict = field(default_factory=dict)
    gaps: np.ndarray = field(
        default_factory=lambda: np.linspace(0, 0.5, 101)
    )  # percentiles of |p - threshold|, out of fold

    def band_for(self, share: float, threshold: float | None = None) -> tuple[float, float]:
        """The uncertain band around the threshold that held about `share` of the
        calibration rows: what goes to the LLM layer."""
        t = self.threshold if threshold is None else threshold
        h = float(np.interp(share * 100, np.arange(101), self.gaps)) if share > 0 else 0.0
        return (t - h, t + h)

    def score_texts(self, texts: Sequence[str], embed: Embed | None) -> tuple[np.ndarray, list[list[str]]]:
        return self.score(texts, embed_start(embed, texts, self.v.shape[0]))

    def readings(self, text: str) -> tuple[list[str], list[str]]:
        """What `score_long` reads: the message and its joined parts (a request put back
        together counts as it is), and the pieces, at most EMBEDDED_PIECES of them (the
        embedding is the cost: the pieces' n-grams pick which get one)."""
        runs = pieces(text)
        if len(runs) > EMBEDDED_PIECES:
            x = rows(runs, self.idf, np.zeros((len(runs), 0)))
            keep = np.sort(np.argsort(-x.dot(self.w, np.zeros(0)), kind="stable")[:EMBEDDED_PIECES])
            runs = [runs[i] for i in keep]
        return [text, *joined(text)], runs

    def score_long(self, text: str, embed: Embed | None) -> tuple[float, list[str]]:
        """P(unsafe) of a message read whole and in pieces (`pieces`), the highest, so a
        request inside a long template is read about as it would be alone. A piece is
        short and out of context, so it must score higher to count (PIECE_MARGIN)."""
        whole, runs = self.readings(text)
        p, cats = self.score_texts(whole + runs, embed)
        t = self.threshold
        cut = t + (1 - t) * PIECE_MARGIN
        # a piece's score on the whole message's scale: `cut` lands on the threshold
        q = np.where(p < cut, p * t / cut, t + (p - cut) * (1 - t) / (1 - cut))
        q[: len(whole)] = p[: len(whole)]
        best = int(np.argmax(q))
        return float(q[best]), cats[best]

    def score(
        self, texts: Sequence[str], embeddings: np.ndarray, categories: bool = True
    ) -> tuple[np.ndarray, list[list[str]]]:
        """P(unsafe) per text and its likely categories, most likely first."""
        x = rows(texts, self.idf, embeddings)
        p = 1 / (1 + np.exp(-(x.dot(self.w, self.v) + self.b)))
        cats: list[list[str]] = [[] for _ in texts]
        if categories and len(texts):
            folded = x.col & (FOLD - 1)
            # (rows, categories) logits: sparse part by row, dense part by matrix product
            sparse = np.zeros((x.n, len(CODES)))
            np.add.at(sparse, x.row, self.cat_w[:, folded].T * x.val[:, None])
            logits = sparse + x.emb @ self.cat_v.T + self.cat_b
            for i in range(x.n):
                order = np.argsort(-logits[i])
                cats[i] = [CODES[k] for k in order if logits[i, k] >= 0] or [CODES[order[0]]]
        return p, cats

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        with tmp.open("wb") as f:
            np.savez_compressed(
                f,
                idf=self.idf.astype(np.float16),
                w=self.w.astype(np.float32),
                v=self.v.astype(np.float32),
                b=self.b,
                cat_w=self.cat_w.astype(np.float32),
                cat_v=self.cat_v.astype(np.float32),
                cat_b=self.cat_b,
                threshold=self.threshold,
                manifest=json.dumps(self.manifest),
                gaps=self.gaps,
            )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Head":
        if not path.is_file():
            raise ModelNotFound(f"the guard head is not trained yet ({path})", "run `anima guard train`")
        try:
            z = np.load(path, allow_pickle=False)
            manifest = json.loads(str(z["manifest"]))
            if manifest.get("format") != FORMAT:
                raise ValueError(f"format {manifest.get('format')}")
            return cls(
                z["idf"].astype(np.float32),
                z["w"].astype(np.float64),
                v=z["v"].astype(np.float64),
                b=float(z["b"]),
                cat_w=z["cat_w"].astype(np.float64),
                cat_v=z["cat_v"].astype(np.float64),
                cat_b=z["cat_b"].astype(np.float64),
                threshold=float(z["threshold"]),
                manifest=manifest,
                gaps=z["gaps"].astype(np.float64),
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ModelCorrupt(
                f"the guard head at {path} is unreadable ({exc})", "run `anima guard train` again"
            ) from exc


def text_key(text: str) -> str:
    """Identity of a training row, to recognise test rows the head has seen."""
    return hashlib.sha1(" ".join(text.lower().split()).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def fit(
    examples: list[Example], embeddings: np.ndarray, l2: float = 1e-4, calibrate: bool = True, categories: bool = True
) -> Head:
    """Train the head. With `calibrate`, 4-fold out-of-fold scores pick the threshold
    (best F1 with at most 6% false positives) and measure how far from it scores fall
    (the LLM layer's band is cut from that)."""
    texts = [e.text for e in examples]
    y = np.array([e.unsafe for e in examples], np.float64)
    idf = features.fit_idf(texts)
    x = rows(texts, idf, embeddings)
    pos = max(y.sum(), 1.0)
    weight = np.where(y == 1, len(y) / (2 * pos), len(y) / (2 * max(len(y) - pos, 1.0)))
    w, v, b = _fit(x, y, size=features.DIM, fold=False, weight=weight, l2=l2)
    cat_w = np.zeros((len(CODES), FOLD))
    cat_v = np.zeros((len(CODES), x.emb.shape[1]))
    cat_b = np.full(len(CODES), -5.0)
    unsafe = [i for i, e in enumerate(examples) if e.unsafe and e.categories] if categories else []
    if unsafe:
        xu = rows([texts[i] for i in unsafe], idf, x.emb[unsafe])
        for k, code in enumerate(CODES):
            yk = np.array([code in examples[i].categories for i in unsafe], np.float64)
            if yk.sum():
                cat_w[k], cat_v[k], cat_b[k] = _fit(
                    xu, yk, size=FOLD, fold=True, weight=np.ones(len(unsafe)), l2=l2, steps=150
                )
    head = Head(idf, w, v=v, b=b, cat_w=cat_w, cat_v=cat_v, cat_b=cat_b)
    if calibrate:
        head.threshold, head.gaps = _calibrate(examples, embeddings, l2)
    return head


def _best_threshold(p: np.ndarray, y: np.ndarray, max_fpr: float = 0.06) -> float:
    """Best F1 with at most `max_fpr` false positives."""
    best, threshold = -1.0, 0.5
    for t in np.arange(0.05, 0.96, 0.01):
        pred = p >= t
        fp = (pred & ~y).sum() / max((~y).sum(), 1)
        tp = (pred & y).sum()
        f1 = 2 * tp / max(pred.sum() + y.sum(), 1)
        if fp <= max_fpr and f1 > best:
            best, threshold = f1, float(t)
    return threshold


def _calibrate(examples: list[Example], embeddings: np.ndarray, l2: float, k: int = 4) -> tuple[float, np.ndarray]:
    """Out-of-fold scores pick the threshold. (A second threshold for short texts was
    tried: on tests/data/guard_probes.csv it cut recall from 0.55 to 0.45 at the same
    zero false alarms, and let explicit hate through, so there is one.)"""
    n = len(examples)
    order = np.argsort([text_key(e.text) for e in examples])  # a fixed, data-defined split
    p = np.zeros(n)
    for f in range(k):
        test = order[f::k]
        train = np.setdiff1d(order, test)
        head = fit([examples[i] for i in train], embeddings[train], l2, calibrate=False, categories=False)
        p[test] = head.score([examples[i].text for i in test], embeddings[test])[0]
    y = np.array([e.unsafe for e in examples])
    threshold = _best_threshold(p, y)
    gaps = np.percentile(np.abs(p - threshold), np.arange(101))
    return threshold, gaps


_ASSIGNED = re.compile(r"\b\w{1,12}\s*=\s*[\"\u201c']([^\"\u201d']{1,300})[\"\u201d']")
_SENTENCE_END = re.compile(r"(?<=[.!?:;>])\s+|\n+")


def pieces(text: str, size: int = EMBED_CHARS, limit: int = 64) -> list[str]:
    """A long message cut at sentence ends into runs of about `size` characters, at most
    `limit` of them (kept evenly across the text); none for a message that short.
    Read whole, a long message's embedding sees only its start and its n-grams are
    diluted by the rest: a harmful request at the end of a role-play preamble scored as
    the preamble did."""
    readable = features.readable(text)
    if len(readable) <= size * 5 // 4:
        return []
    runs: list[str] = []
    for sentence in (s.strip() for s in _SENTENCE_END.split(readable)):
        if not sentence:
            continue
        if runs and len(runs[-1]) + 1 + len(sentence) <= size:
            runs[-1] += " " + sentence
        else:
            runs.append(sentence)
    if len(runs) > limit:
        runs = [runs[round(i * (len(runs) - 1) / (limit - 1))] for i in range(limit)]
    return runs


def joined(text: str) -> list[str]:
    """The quoted parts a message gives to variables, joined in order, when there are
    two or more (payload splitting: a = "how to make a", b = " bomb", "do what a + b
    says"); else nothing."""
    parts = _ASSIGNED.findall(features.readable(text))
    return ["".join(parts)] if len(parts) >= 2 else []


def embed_start(embed: Embed | None, texts: Sequence[str], dim: int = 0) -> np.ndarray:
    """Embeddings of the texts' starts; zeros of width `dim` without an embedder."""
    if embed is None:
        return np.zeros((len(texts), dim))
    return np.asarray(embed([features.readable(t)[:EMBED_CHARS] or " " for t in texts]), np.float64)


def train(
    examples: list[Example],
    embed: Embed,
    sources: dict[str, str] | None = None,
    progress: Callable[[str], None] = lambda _: None,
    embedded: np.ndarray | None = None,
) -> Head:
    """A head fitted to `examples`; `embedded` holds the vectors of the first of them
    when they were embedded already (two heads that share rows embed them once)."""
    start = time.perf_counter()
    progress("embedding")
    texts = [e.text for e in examples]
    emb = embedded if embedded is not None else np.zeros((0, 0))
    if len(emb) < len(texts):
        new = embed_start(embed, texts[len(emb) :])
        emb = np.vstack([emb, new]) if len(emb) else new
    progress("fitting")
    head = fit(examples, emb)
    head.manifest = {
        "format": FORMAT,
        "rows": len(examples),
        "unsafe": int(sum(e.unsafe for e in examples)),
        "sources": sources or {},
        "keys": sorted({text_key(e.text) for e in examples}),
        "threshold": head.threshold,
        "seconds": round(time.perf_counter() - start, 1),
    }
    return head
