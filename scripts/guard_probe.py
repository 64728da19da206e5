"""A probe on the chat model's middle layer against the fast layer's MiniLM head, standalone.

(The guard reads such a probe in a turn, behind the turn's system prompt: anima/safety/probe.py,
`anima guard train --probe`. This script measures the bare comparison the choice rested on.)

The guard's fast layer is a linear head over n-grams and a MiniLM embedding. Here the same
head (`classifier.fit`, same training rows, same threshold rule) reads, in place of MiniLM,
the chat model's hidden state after block `--layer` at the last token of the message in
the chat template (`LlamaCppHiddenStates(layer=...)`: the blocks above it are not run).
Both heads are scored the same way (each message read whole), on

  validation  tests/data/guard_contrast_validation.csv, tests/data/guard_probes.csv,
              Do-Not-Answer's unused train split (all harmful)
  test        (--test) the public sets' test split and tests/data/guard_test.csv

    .venv/bin/python scripts/guard_probe.py [--model default] [--layer 14] [--test] [--json]

Reading the ~6,000 messages takes about 45 minutes on 2 cores the first time; the states
are kept in the cache file (--cache), keyed by text, and read from there after.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anima.config import data_dir, load_config  # noqa: E402
from anima.errors import AnimaError  # noqa: E402
from anima.models import load_embedder  # noqa: E402
from anima.models.registry import resolve  # noqa: E402
from anima.safety import classifier  # noqa: E402
from anima.safety.data import (  # noqa: E402
    donotanswer,
    held_out,
    read_labelled,
    split_of,
    training_set,
)
from anima.safety.evaluate import auprc  # noqa: E402
from anima.safety.train import source_folder  # noqa: E402

BODY_TOKENS = 64  # a longer message is read by its first and last 32 tokens
TEMPLATE_TOKENS = 9  # ChatML's user and assistant markers around it, and one spare
SCALE = 3.0  # each dimension standardised, the vector's length about this (chosen on validation: 0 / 3)


def key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def sets(test: bool) -> dict[str, list]:
    folder = source_folder()  # a clear error when the public sets are not there
    out = {
        "train": training_set(folder),
        "contrast validation": read_labelled(ROOT / "tests/data/guard_contrast_validation.csv"),
        "probes (validation)": read_labelled(ROOT / "tests/data/guard_probes.csv"),
        "Do-Not-Answer train split (validation)": [
            e for e in donotanswer(folder / "donotanswer") if split_of(e.text) == "train"
        ],
    }
    if test:
        out["public test split"] = held_out(folder)
        out["guard_test.csv (test)"] = read_labelled(ROOT / "tests/data/guard_test.csv")
    return out


def states(texts: list[str], model: str, layer: int, cache: Path) -> tuple[np.ndarray, list[float]]:
    """Hidden states of the texts (cached by text), and the seconds each new one took."""
    from rich.progress import Progress

    from anima.models.llama_cpp import LlamaCppHiddenStates

    found: dict[str, np.ndarray] = {}
    if cache.exists():
        z = np.load(cache)
        found = dict(zip(z["keys"].tolist(), z[f"L{layer}"]))
    todo = [t for t in dict.fromkeys(texts) if key(t) not in found]
    took: list[float] = []
    if todo:
        reader = LlamaCppHiddenStates(resolve(model), n_ctx=BODY_TOKENS + TEMPLATE_TOKENS, layer=layer)
        with Progress(transient=True) as bar:
            task = bar.add_task(f"reading with layer {layer}", total=len(todo))
            for i, text in enumerate(todo):
                start = time.perf_counter()
                found[key(text)] = np.asarray(reader.embed([text])[0], np.float16)
                took.append(time.perf_counter() - start)
                bar.advance(task)
                if i % 500 == 499 or i == len(todo) - 1:
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    np.savez(cache, keys=np.array(list(found)), **{f"L{layer}": np.stack(list(found.values()))})
    return np.stack([found[key(t)] for t in texts]).astype(np.float64), took


def standardise(train: np.ndarray):
    """Centred and scaled by the training rows (no labels used)."""
    mean, std = train.mean(0), train.std(0) + 1e-6
    return lambda x: (x - mean) / std / np.sqrt(x.shape[1]) * SCALE


def scores(feats: dict[str, np.ndarray], data: dict[str, list]) -> dict:
    head = classifier.fit(data["train"], feats["train"], categories=False)
    out = {"threshold": round(head.threshold, 2)}
    for set_name, rows in data.items():
        if set_name == "train":
            continue
        p = head.score([e.text for e in rows], feats[set_name], categories=False)[0]
        y = np.array([e.unsafe for e in rows], bool)
        pred = p >= head.threshold
        # share flagged among the harmful rows and among the harmless ones (None: no such rows)
        rate = lambda sel: round(float(pred[sel].mean()), 3) if sel.any() else None
        row = {"n": len(rows), "recall": rate(y), "fpr": rate(~y)}
        if y.any() and (~y).any():
            row["auprc"] = round(auprc(y, p), 3)
        if set_name == "public test split":
            source = np.array([e.source.split("#")[0].split("/")[0] for e in rows])
            row["by_source"] = {
                src: {
                    "n": int((source == src).sum()),
                    "recall": rate((source == src) & y),
                    "fpr": rate((source == src) & ~y),
                }
                for src in sorted(set(source))
            }
        out[set_name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--layer", type=int, default=14)
    ap.add_argument("--test", action="store_true", help="also score the test sets (report only)")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cache = args.cache or data_dir() / "cache" / f"guard-probe-{args.model}-layer{args.layer}.npz"
    data = sets(args.test)
    every = [e.text for rows in data.values() for e in rows]
    hidden, took = states(every, args.model, args.layer, cache)
    embed = load_embedder(load_config()).embed
    minilm = classifier.embed_start(embed, every)
    cut = np.cumsum([0] + [len(rows) for rows in data.values()])
    split = lambda m: {name: m[cut[i] : cut[i + 1]] for i, name in enumerate(data)}
    scale = standardise(split(hidden)["train"])
    result = {
        "model": args.model,
        "layer": args.layer,
        "minilm": scores(split(minilm), data),
        "probe": scores(split(scale(hidden)), data),
    }
    if len(took) >= 20:
        ms = sorted(t * 1000 for t in took)
        result["probe_ms_per_message"] = {"p50": round(statistics.median(ms)), "p95": round(ms[int(len(ms) * 0.95)])}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'set':42} {'head':7} {'recall':>7} {'FPR':>6} {'AUPRC':>6}")
    for set_name in data:
        if set_name == "train":
            continue
        for head in ("minilm", "probe"):
            r = result[head][set_name]
            cells = [r["recall"], r["fpr"], r.get("auprc")]
            print(f"{set_name:42} {head:7} " + " ".join(f"{'-' if c is None else c:>6}" for c in cells))
    for head in ("minilm", "probe"):
        for src, r in result[head].get("public test split", {}).get("by_source", {}).items():
            print(f"  test by source  {head:7} {src:40} n={r['n']:<4} recall {r['recall']}  FPR {r['fpr']}")
    if "probe_ms_per_message" in result:
        print("probe cost per message (ms):", result["probe_ms_per_message"])


if __name__ == "__main__":
    try:
        main()
    except (AnimaError, ValueError) as exc:  # no data, no model, a layer the model lacks: one line
        sys.exit(f"error: {exc}")
