"""`anima eval guard` and `anima eval injection`: precision, recall, F1, false-positive
rate, AUPRC and latency per layer, on held-out data only.

When some of the file's rows were in the shipped head's training data, the command
does not score them with that head: it runs k-fold cross-validation instead, training
a fresh head for each fold on the training data minus that fold's rows.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from anima.errors import BadInput, ModelNotFound
from anima.safety import classifier
from anima.safety.data import Example, bipia_contexts, reply_reads, training_set
from anima.safety.guard import Guard, Verdict
from anima.safety.injection import InjectionDetector, rule_score
from anima.safety.train import attack_instructions, injection_examples, source_folder

Progress = Callable[[int, int], None]


def metrics(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> dict:
    y, pred = y.astype(bool), pred.astype(bool)
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "n": int(len(y)),
        "unsafe": int(y.sum()),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
        "fpr": round(fp / (fp + tn), 4) if fp + tn else 0.0,
        "auprc": round(auprc(y, score), 4),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def auprc(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision (the step-wise area under the precision-recall curve)."""
    if not y.any():
        return 0.0
    order = np.argsort(-score, kind="stable")
    hits = y[order].astype(float)
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision_at * hits).sum() / hits.sum())


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else 0.0


class CachedEmbed:
    """Embeds each distinct text once per run (cross-validation re-trains many times)."""

    def __init__(self, embed: classifier.Embed):
        self.embed, self.cache = embed, {}

    def __call__(self, texts: list[str]) -> list[list[float]]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        for t, v in zip(missing, self.embed(missing) if missing else []):
            self.cache[t] = v
        return [self.cache[t] for t in texts]


@dataclass
class Result:
    metrics: dict
    mode: str
    latency: dict = field(default_factory=dict)
    per_category: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)
    worst: list = field(default_factory=list)
    per_source: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            **self.metrics,
            **self.latency,
            "mode": self.mode,
            "per_category": self.per_category,
            "per_source": self.per_source,
            "layers": self.layers,
            "worst": self.worst,
        }


def sample(examples: list[Example], limit: int | None, seed: int = 0) -> list[Example]:
    if not limit or limit >= len(examples):
        return examples
    return random.Random(seed).sample(examples, limit)


def eval_guard(
    examples: list[Example],
    guard: Guard,
    training_folder: Path | None,
    folds: int = 5,
    progress: Progress = lambda d, t: None,
    replies: bool = False,
) -> Result:
    """Score every example with `guard`; rows the head was trained on are scored by
    heads re-trained without them (k-fold). With `replies`, each row is an assistant's
    reply, read as a turn reads one while it streams (`check_reply`)."""
    keys = [classifier.text_key(e.text) for e in examples]
    if replies:
        return _eval_replies(examples, keys, guard, progress)
    seen = set(guard.head.manifest.get("keys", [])) if guard.head is not None else set()
    overlap = sum(k in seen for k in keys)
    heads: list[classifier.Head | None] = [guard.head] * len(examples)
    mode = "held-out: no row of this file was in the head's training data"
    if guard.head is None:
        mode = "no layer-1 head"
    elif overlap:
        try:
            training_folder = source_folder(training_folder)
        except ModelNotFound as exc:
            raise BadInput(
                (
                    f"{overlap} of these {len(examples)} rows trained the guard, so they are scored by "
                    f"cross-validation, which needs its training data: {exc.message}"
                ),
                "pass --training-data (the folder `anima guard train` used) or set ANIMA_SAFETY_DATA",
            ) from None
        mode = (
            f"{folds}-fold cross-validation ({overlap} of {len(examples)} rows were in the shipped head's "
            f"training data)"
        )
        train = training_set(training_folder)
        embed = CachedEmbed(guard.embed) if guard.embed is not None else None
        for f in range(folds):
            fold_keys = {k for i, k in enumerate(keys) if i % folds == f}
            rows = [e for e in train if classifier.text_key(e.text) not in fold_keys]
            head = classifier.fit(rows, classifier.embed_start(embed, [e.text for e in rows], guard.head.v.shape[0]))
            for i in range(f, len(examples), folds):
                heads[i] = head
            progress(0, len(examples))
    # The probe is not re-trained per fold (it reads the chat model: ~25 minutes): the
    # rows it trained on are scored without it.
    probe_seen = set(guard.probe.manifest.get("keys", [])) if guard.probe is not None else set()
    unprobed = sum(k in probe_seen for k in keys)
    if unprobed:
        mode += f"; the probe was off for the {unprobed} rows it trained on"
    verdicts = []
    shipped, probe = guard.head, guard.probe
    for i, (e, head) in enumerate(zip(examples, heads)):
        guard.head = head
        guard.probe = None if keys[i] in probe_seen else probe
        verdicts.append(guard.check(e.text))
        progress(i + 1, len(examples))
    guard.head, guard.probe = shipped, probe
    return _result(examples, verdicts, [not v.safe for v in verdicts], mode)


def check_reply(guard: Guard, text: str) -> tuple[bool, Verdict]:
    """Whether a turn would stop this reply, and the verdict that decided: the fast layer
    on the reply so far at each piece's end (`data.reply_reads`), then the full check of
    the whole reply. A warning (`guard.policy`) lets a reply go on."""
    *reads, whole = reply_reads(text)
    start, highest = time.perf_counter(), 0.0
    for read in reads:
        verdict = guard.check_fast(read, "assistant")
        highest = max(highest, verdict.score)
        if verdict.action == "block":
            break
    else:
        verdict = guard.check(whole, "assistant")
    verdict.score = max(highest, verdict.score)  # the reply ranks by its most suspect read
    verdict.latency_ms = (time.perf_counter() - start) * 1000
    return verdict.action == "block", verdict


def _eval_replies(examples: list[Example], keys: list[str], guard: Guard, progress: Progress) -> Result:
    head = guard.reply_head or guard.head
    learned = set(head.manifest.get("keys", [])) if head is not None else set()
    verdicts, stopped = [], []
    for i, e in enumerate(examples):
        stop, verdict = check_reply(guard, e.text)
        verdicts.append(verdict)
        stopped.append(stop)
        progress(i + 1, len(examples))
    mode = "replies, read as they stream: " + ("the reply head" if guard.reply_head else "the request head")
    if same := [e.text for e, k in zip(examples, keys) if k in learned]:
        # not re-trained without them: the same words are a reply the model gives to many requests
        mode += f"; {len(same)} rows are word for word training rows (e.g. {min(same, key=len)[:60]!r})"
    return _result(examples, verdicts, stopped, mode)


def _result(examples: list[Example], verdicts: list[Verdict], flagged: list[bool], mode: str) -> Result:
    y, pred, score, lat, layer_of = [], [], [], {"total": []}, []
    for e, v, p in zip(examples, verdicts, flagged):
        y.append(e.unsafe)
        pred.append(p)
        score.append(v.score)
        layer_of.append(v.layer)
        lat["total"].append(v.latency_ms)
        for k, ms in v.layers_ms.items():
            lat.setdefault(k, []).append(ms)
    ya, pa, sa = np.array(y), np.array(pred), np.array(score)
    latency = {"latency_p50_ms": percentile(lat["total"], 50), "latency_p95_ms": percentile(lat["total"], 95)}
    latency["per_layer"] = {
        k: {"p50_ms": percentile(v, 50), "p95_ms": percentile(v, 95), "calls": len(v)} for k, v in lat.items()
    }
    per_category = {}
    for code in sorted({c for e in examples for c in e.categories}, key=lambda c: int(c[1:])):
        idx = [i for i, e in enumerate(examples) if code in e.categories]
        per_category[code] = {"n": len(idx), "recall": round(float(pa[idx].mean()), 4)}
    per_source = {}
    for source in sorted({e.source for e in examples}):
        idx = np.array([i for i, e in enumerate(examples) if e.source == source])
        bad, good = idx[ya[idx]], idx[~ya[idx]]
        per_source[source] = {
            "unsafe": len(bad),
            "safe": len(good),
            "recall": round(float(pa[bad].mean()), 4) if len(bad) else None,
            "fpr": round(float(pa[good].mean()), 4) if len(good) else None,
        }
    # each layer's decisions, and how many of them flagged a harmful row (caught) or a harmless one
    layers = {
        name: {
            "decided": layer_of.count(name),
            "caught": sum(lay == name and p and t for lay, p, t in zip(layer_of, pred, y)),
            "false_alarms": sum(lay == name and p and not t for lay, p, t in zip(layer_of, pred, y)),
        }
        for name in dict.fromkeys(layer_of)
    }
    worst_fn = sorted((i for i in range(len(y)) if ya[i] and not pa[i]), key=lambda i: sa[i])[:5]
    worst_fp = sorted((i for i in range(len(y)) if pa[i] and not ya[i]), key=lambda i: -sa[i])[:5]
    worst = [
        {"kind": kind, "score": round(float(sa[i]), 3), "source": examples[i].source, "text": examples[i].text[:160]}
        for kind, ids in (("missed", worst_fn), ("false alarm", worst_fp))
        for i in ids
    ]
    return Result(
        metrics(ya, pa, sa),
        mode,
        latency=latency,
        per_category=per_category,
        layers=layers,
        worst=worst,
        per_source=per_source,
    )


# --- injection -------------------------------------------------------------------


def insert(context: str, attack: str, where: str) -> str:
    if where == "start":
        return f"{attack}\n{context}"
    if where == "end":
        return f"{context}\n{attack}"
    lines = context.split("\n")
    mid = len(lines) // 2
    return "\n".join(lines[:mid] + [attack] + lines[mid:])


def inserted_cases(docs: list[Example], attacks: list[str]) -> list[Example]:
    """Each clean document once as is and once with an attack instruction inserted (the
    attacks in turn; at the start, middle and end in turn): a held-out injection test
    from any set of documents and any list of attacks."""
    cases = []
    for i, doc in enumerate(docs):
        attacked = insert(doc.text, attacks[i % len(attacks)], ("start", "middle", "end")[i % 3])
        cases += [Example(doc.text, False, (), doc.source), Example(attacked, True, (), doc.source)]
    return cases


def bipia_cases(
    folder: Path, limit: int | None = None, seed: int = 0, folds: int = 5
) -> tuple[list[Example], list[str], list[str]]:
    """BIPIA-style cases: each clean email or code answer once as is, and once with an
    attack instruction inserted at the start, middle or end. The attack comes from the
    attack types of the context's own fold (context i is in fold i % folds, attack type
    j of the sorted list in fold j % folds), so leave-attack-type-out cross-validation
    can score every case. Returns the cases, each one's attack type ("" when clean) and
    its context id."""
    rng = random.Random(seed)
    attacks = attack_instructions(folder)
    kinds = sorted(attacks)
    cases, types, ctx_ids = [], [], []
    for ci, ctx in enumerate(bipia_contexts(folder / "bipia")):
        if ctx.source.endswith("#question"):
            continue  # the user's question about an email, not external content
        family = "code:" if ctx.source.startswith("code") else "text:"
        pool = [k for k in kinds[ci % folds :: folds] if k.startswith(family)] or [
            k for k in kinds if k.startswith(family)
        ]
        kind = rng.choice(pool)
        attack = rng.choice(attacks[kind])
        cases += [
            Example(ctx.text, False, (), ctx.source),
            Example(insert(ctx.text, attack, rng.choice(["start", "middle", "end"])), True, (), ctx.source),
        ]
        types += ["", kind]
        ctx_ids += [str(ci), str(ci)]
    if limit and limit < len(cases):
        keep = sorted(rng.sample(range(len(cases)), limit))
        cases, types, ctx_ids = [cases[i] for i in keep], [types[i] for i in keep], [ctx_ids[i] for i in keep]
    return cases, types, ctx_ids


def eval_injection(
    cases: list[Example],
    detector: InjectionDetector,
    folder: Path | None,
    types: list[str] | None = None,
    ctx_ids: list[str] | None = None,
    folds: int = 5,
    progress: Progress = lambda d, t: None,
) -> Result:
    """With BIPIA cases built from the training folder, each fold's head is trained
    without that fold's attack types and contexts (leave-attack-type-out)."""
    scores = np.zeros(len(cases))
    lat: list[float] = []
    if folder is not None and types is not None and ctx_ids is not None and detector.head is not None:
        mode = f"{folds}-fold leave-attack-type-out cross-validation"
        scores[:] = np.nan
        attacks = attack_instructions(folder)
        kinds = sorted(attacks)
        contexts = bipia_contexts(folder / "bipia")
        embed = CachedEmbed(detector.embed) if detector.embed is not None else None
        done = 0
        for f in range(folds):
            test_kinds = set(kinds[f::folds])
            test_ctx = {c for c in set(ctx_ids) if int(c) % folds == f}
            train_attacks = {k: v for k, v in attacks.items() if k not in test_kinds}
            train_ctx = [c for i, c in enumerate(contexts) if str(i) not in test_ctx]
            rows = injection_examples(folder, train_attacks, train_ctx)
            emb = classifier.embed_start(embed, [r.text for r in rows], detector.head.v.shape[0])
            fold_detector = InjectionDetector(classifier.fit(rows, emb), embed, detector.threshold)
            for i, (kind, c) in enumerate(zip(types, ctx_ids)):
                if c in test_ctx and (kind == "" or kind in test_kinds):
                    t = time.perf_counter()
                    scores[i] = fold_detector.score(cases[i].text)
                    lat.append((time.perf_counter() - t) * 1000)
                    done += 1
                    progress(done, len(cases))
        keep = ~np.isnan(scores)
    else:
        mode = "held-out file"
        for i, e in enumerate(cases):
            t = time.perf_counter()
            scores[i] = detector.score(e.text)
            lat.append((time.perf_counter() - t) * 1000)
            progress(i + 1, len(cases))
        keep = np.ones(len(cases), bool)
    y = np.array([e.unsafe for e in cases])[keep]
    s = scores[keep]
    rules = np.array([rule_score(e.text) for e in cases])[keep]
    m = metrics(y, s >= detector.threshold, s)
    m["rules_only"] = {
        k: v
        for k, v in metrics(y, rules >= detector.threshold, rules).items()
        if k in ("precision", "recall", "f1", "fpr")
    }
    latency = {"latency_p50_ms": percentile(lat, 50), "latency_p95_ms": percentile(lat, 95)}
    return Result(m, mode, latency)
