"""The guard's probe: a linear head on the chat model's own reading of a message.

The chat model's hidden state after a middle block (layer 14 of the default 1.5B
model's 28), at the last token of the prompt, where its reply would start, carries its
own sense of the request. A linear head on it (`classifier.fit`: the fast layer's
n-grams, with this state in place of the MiniLM embedding; same training rows, same
threshold rule) caught far more of the public test split than the fast layer at about
its false-alarm rate (see README, Safety). In a turn it costs nothing: the refusal vote
reads that same prompt, and the state is kept as it passes (`hidden_state`).

Training reads every training row once through the model's first blocks (~20 minutes
on 2 cores): `anima guard train --probe`. Each row is read as a turn reads it, after a
persona's system prompt (all of them in turn, with and without the turn's clock line):
a prefix shifts the state, and a probe trained on bare messages lost some of its hold
behind one. The states are cached by text as they are read, so an interrupted run
goes on where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from anima.config import Config, data_dir
from anima.errors import ModelCorrupt
from anima.models.base import Message
from anima.safety import classifier
from anima.safety.classifier import Head
from anima.safety.data import Example

LAYER = 14  # of the default model's 28: chosen on validation (9 caught less; see README)
BODY_TOKENS = 64  # a longer training row is read by its first and last 32 tokens
SCALE = 3.0  # each dimension standardised, the vector's length about this (chosen on validation: unit length / 3)
CHUNK = 25  # rows read between two saves of the cache


def probe_file(model: str, layer: int = LAYER) -> Path:
    from anima.safety.train import heads_dir

    return heads_dir() / f"probe-{model}-layer{layer}.npz"


def wanted(config: Config) -> bool:
    """Whether a turn's guard reads a probe: the guard, its refusal vote and its second
    look on, the embedded model, and a probe trained for this model and block."""
    g = config.guard
    on = g.probe and g.votes and config.backend == "llama_cpp"  # votes: the guard and its LLM layers on
    return on and probe_file(config.model, g.probe_layer).is_file()


def contexts() -> list[list[Message]]:
    """The prompts a training row is read behind: each built-in persona's system
    prompt, alone and with the clock line a turn puts before the user's message."""
    from anima.persona import personas

    out: list[list[Message]] = []
    for i, persona in enumerate(sorted(personas().values(), key=lambda p: p.name)):
        head: list[Message] = [{"role": "system", "content": persona.system_prompt}]
        out.append(head)
        day = 1 + (i * 7) % 28  # a fixed date per persona: the same data gives the same weights
        out.append(head + [{"role": "system", "content": f"Now: Monday {day:02d} March 2026, {8 + i % 12}:30."}])
    return out


def _key(prefix: list[Message], text: str) -> str:
    return hashlib.sha1(json.dumps([prefix, text]).encode("utf-8", "surrogatepass")).hexdigest()


def read_training_states(
    model, examples: list[Example], layer: int, cache: Path, progress: Callable[[int], None] = lambda _: None
) -> np.ndarray:
    """Each row's state, read behind `contexts()[i % len]` (cached in `cache` by
    prompt and text); `progress(rows done)` after each chunk."""
    prefixes = contexts()
    found: dict[str, np.ndarray] = {}
    if cache.is_file():
        try:
            z = np.load(cache, allow_pickle=False)
            found = dict(zip(z["keys"].tolist(), z["states"]))
        except (OSError, ValueError, KeyError):  # a cache cut short: read again
            found = {}
    keys = [_key(prefixes[i % len(prefixes)], e.text) for i, e in enumerate(examples)]
    done = sum(k in found for k in keys)
    progress(done)
    for c, prefix in enumerate(prefixes):
        todo = [i for i in range(c, len(examples), len(prefixes)) if keys[i] not in found]
        for start in range(0, len(todo), CHUNK):
            part = todo[start : start + CHUNK]
            states = model.read_states(prefix, [examples[i].text for i in part], layer, BODY_TOKENS)
            for i, state in zip(part, states):
                found[keys[i]] = state.astype(np.float16)
            done += len(part)
            _save_cache(cache, found)
            progress(done)
    return np.stack([found[k] for k in keys]).astype(np.float64)


def _save_cache(cache: Path, found: dict[str, np.ndarray]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".part.npz")
    np.savez(tmp, keys=np.array(list(found)), states=np.stack(list(found.values())))
    tmp.replace(cache)


def fit(examples: list[Example], states: np.ndarray) -> Head:
    """The head on standardised states (each dimension centred and scaled on these rows,
    the vector's length about SCALE), with the standardisation folded into its weights:
    the returned head reads the raw (unit-length) state."""
    mean, std = states.mean(0), states.std(0) + 1e-6
    scale = SCALE / (std * np.sqrt(states.shape[1]))
    head = classifier.fit(examples, (states - mean) * scale)
    head.v = head.v * scale
    head.b = float(head.b - mean @ head.v)
    head.cat_v = head.cat_v * scale
    head.cat_b = head.cat_b - head.cat_v @ mean
    return head


def train(
    model,
    examples: list[Example],
    sources: dict[str, str],
    layer: int = LAYER,
    progress: Callable[[int], None] = lambda _: None,
) -> Head:
    """Read, fit and describe the probe (not saved)."""
    start = time.perf_counter()
    cache = data_dir() / "cache" / f"probe-states-{model.name}-layer{layer}.npz"
    states = read_training_states(model, examples, layer, cache, progress)
    head = fit(examples, states)
    head.manifest = {
        "format": classifier.FORMAT,
        "kind": "probe",
        "model": model.name,
        "layer": layer,
        "rows": len(examples),
        "unsafe": int(sum(e.unsafe for e in examples)),
        "sources": sources,
        "keys": sorted({classifier.text_key(e.text) for e in examples}),
        "threshold": head.threshold,
        "seconds": round(time.perf_counter() - start, 1),
    }
    return head


def load(model: str, layer: int = LAYER, sources: dict[str, str] | None = None) -> Head | None:
    """The trained probe for `model`, or None when there is none (or, given `sources`,
    when it was trained on other data)."""
    path = probe_file(model, layer)
    if not path.is_file():
        return None
    try:
        head = Head.load(path)
    except ModelCorrupt as exc:
        raise ModelCorrupt(f"the guard probe at {path} is unreadable", "run `anima guard train --probe` again") from exc
    if sources is not None and head.manifest.get("sources") != sources:
        return None
    return head
