"""Text -> sparse features for the fast guard layer: hashed word 1-2-grams and
character 2-5-grams (TF-IDF, L2-normalised), computed on a normalised view of the text
that also undoes the cheap disguises (leetspeak, base64 blocks, spaced-out letters).

Hashing uses crc32, so a feature index is the same on every machine and in every
process (Python's own `hash` is salted per process).
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
import zlib

import numpy as np

DIM = 1 << 18
MAX_CHARS = 4000  # a longer text is read by its start and its end
_WORD = re.compile(r"\w+", re.UNICODE)
_B64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i", "|": "l"}
)
_SPACED = re.compile(r"\b(?:\w[ .\-_*]){3,}\w\b")


def decoded(text: str) -> list[str]:
    """Readable text hidden in base64 blocks."""
    found = []
    for block in _B64.findall(text):
        try:
            raw = base64.b64decode(block + "=" * (-len(block) % 4), validate=False)
            plain = raw.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if (
            plain
            and sum(c.isprintable() or c.isspace() for c in plain) / len(plain) > 0.95
            and re.search(r"[A-Za-z]{3}", plain)
        ):
            found.append(plain)
    return found


def readable(text: str) -> str:
    """What a reader would see: the decoded text when base64 blocks make up most of it."""
    plain = decoded(text)
    if plain and sum(map(len, plain)) * 4 >= len(text.strip()) * 3 * 0.5:
        return " ".join(plain)
    return text


def normalise(text: str) -> str:
    """Lower-cased, NFKC, cut to MAX_CHARS (start and end), disguises undone and appended."""
    if len(text) > MAX_CHARS:
        text = text[: MAX_CHARS * 3 // 4] + " " + text[-MAX_CHARS // 4 :]
    text = unicodedata.normalize("NFKC", text)
    extra = decoded(text)
    low = text.lower()
    if re.search(r"[a-z][013457@$][a-z]", low):  # digits inside words: leetspeak
        extra.append(low.translate(_LEET))
    extra += [re.sub(r"[ .\-_*]", "", m) for m in _SPACED.findall(low)]  # "k i l l" -> "kill"
    return " ".join([low, *(e.lower() for e in extra)])


def _h(s: str) -> int:
    return zlib.crc32(s.encode("utf-8", "surrogatepass")) & (DIM - 1)


def counts(text: str) -> dict[int, float]:
    """Feature index -> raw count."""
    out: dict[int, float] = {}
    words = _WORD.findall(normalise(text))
    prev = "<s>"
    for w in words:
        for key in ("w:" + w, "b:" + prev + " " + w):
            i = _h(key)
            out[i] = out.get(i, 0.0) + 1.0
        prev = w
        padded = f" {w[:24]} "
        for n in (2, 3, 4, 5):
            for k in range(len(padded) - n + 1):
                i = _h(padded[k : k + n])
                out[i] = out.get(i, 0.0) + 1.0
    return out


def vector(text: str, idf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sparse TF-IDF row: (indices, values), L2-normalised."""
    c = counts(text)
    if not c:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    idx = np.fromiter(c.keys(), np.int64, len(c))
    val = (1.0 + np.log(np.fromiter(c.values(), np.float64, len(c)))) * idf[idx]
    norm = np.linalg.norm(val)
    return idx, (val / norm if norm else val).astype(np.float32)


def fit_idf(texts: list[str]) -> np.ndarray:
    df = np.zeros(DIM, np.float64)
    for t in texts:
        df[list(counts(t).keys())] += 1
    n = len(texts)
    return (np.log((1 + n) / (1 + df)) + 1.0).astype(np.float32)
