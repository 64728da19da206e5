"""`anima guard train`: the heads of the guard's layer 1 and of the injection detector,
trained from the public sets in the safety data folder and saved under
`<data dir>/models/guard/`. Deterministic: the same data gives the same weights."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from anima.config import data_dir
from anima.errors import AnimaError, ModelNotFound
from anima.models.onnx_embed import EMBEDDER
from anima.safety import classifier
from anima.safety.data import Example, bipia_contexts, jbb, own_words, replies, safety_data_dir, training_set
from anima.safety.injection import segments

GUARD_FILE, INJECTION_FILE, REPLY_FILE = "guard-head.npz", "injection-head.npz", "reply-head.npz"
HEADS = (GUARD_FILE, INJECTION_FILE, REPLY_FILE)
REQUIRED = (
    "openai_moderation_1680.jsonl",
    "harmbench_behaviors_text_val.csv",
    "jbb_behaviors_harmful.csv",
    "jbb_behaviors_benign.csv",
    "bipia/email_train.jsonl",
    "bipia/code_train.jsonl",
    "bipia/text_attack_train.json",
    "bipia/code_attack_train.json",
)


def heads_dir() -> Path:
    return data_dir() / "models" / "guard"


def source_folder(folder: Path | None = None) -> Path:
    folder = folder or safety_data_dir()
    if folder is None:
        raise ModelNotFound(
            "no safety training data found (../shared/data/safety)",
            "set ANIMA_SAFETY_DATA to the folder of the public safety sets (see README, Safety)",
        )
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise ModelNotFound(
            f"the safety data at {folder} lacks {', '.join(missing)}",
            "point ANIMA_SAFETY_DATA (or --data) at the complete folder (see README, Safety)",
        )
    return folder


# Bumped when what the heads learn changes in code
# (3: the public sets' train split only; Llama Guard 3's S2 for hacking;
# 4: the authored requests, anima/safety/data/requests_*.csv;
# 5: the reply head, anima/safety/data/replies.csv).
RECIPE = "5"


def fingerprint(folder: Path) -> dict[str, str]:
    """sha256 prefixes of every file the heads learn from: the public folder's and anima's
    own, and the recipe (so `guard train --if-missing` retrains after a change in code)."""
    from anima.persona import BUILTIN_DIR
    from anima.safety.data import AUTHORED, EVERYDAY, LOOKALIKES, OWN_WORDS, REPLIES

    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    found = {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    for path in (EVERYDAY, OWN_WORDS, LOOKALIKES, REPLIES, *AUTHORED):
        found["anima:" + path.name] = digest(path)
    found["anima:recipe"] = RECIPE
    found["anima:personas"] = hashlib.sha256(
        "".join(digest(p) for p in sorted(BUILTIN_DIR.glob("*.toml"))).encode()
    ).hexdigest()[:16]
    return found


def up_to_date(folder: Path | None = None) -> bool:
    """The heads exist and were trained on the data there is now."""
    from anima.safety.classifier import Head

    try:
        heads = [Head.load(heads_dir() / name) for name in HEADS]
        current = fingerprint(source_folder(folder))
    except (OSError, ValueError, KeyError, AnimaError):
        return False
    return all(h.manifest.get("sources") == current and h.manifest.get("embedder") == EMBEDDER for h in heads)


def attack_instructions(folder: Path) -> dict[str, list[str]]:
    """BIPIA attack type -> its injected instructions (text and code attacks)."""
    out: dict[str, list[str]] = {}
    for name in ("text_attack_train.json", "code_attack_train.json"):
        for kind, items in json.loads((folder / "bipia" / name).read_text(encoding="utf-8")).items():
            out[f"{name.split('_')[0]}:{kind}"] = list(items)
    return out


def injection_examples(
    folder: Path, attacks: dict[str, list[str]], contexts: list[Example] | None = None
) -> list[Example]:
    """Sentences aimed at an AI (attack instructions, and requests like JailbreakBench's
    goals) against the sentences of ordinary emails and answers and of the user's own
    to-dos, notes and how-tos."""
    pos = [s for items in attacks.values() for s in items]
    pos += [
        e.text
        for e in jbb(folder / "jbb_behaviors_harmful.csv", True) + jbb(folder / "jbb_behaviors_benign.csv", False)
    ]
    neg = [
        s for e in (contexts if contexts is not None else bipia_contexts(folder / "bipia")) for s in segments(e.text)
    ]
    neg += [e.text for e in own_words()]  # "Call the plumber" in a to-do is data too
    return [Example(t, True, (), "attack") for t in pos] + [Example(t, False, (), "context") for t in neg]


def train_all(
    embed: classifier.Embed,
    folder: Path | None = None,
    out: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict:
    """The three heads, trained on `embed`'s vectors: the guard's embedder's, which their
    manifest names (`onnx_embed.EMBEDDER`). The reply head learns what the guard head
    does and the model's own replies besides (`data.replies`): it reads replies, whose
    wording requests never have."""
    folder = source_folder(folder)
    out = out or heads_dir()
    sources = fingerprint(folder)
    requests = training_set(folder)
    progress("guard head")
    seen = classifier.embed_start(embed, [e.text for e in requests])
    guard = classifier.train(requests, embed, sources, progress, embedded=seen)
    progress("reply head")
    reply = classifier.train(requests + replies(), embed, sources, progress, embedded=seen)
    progress("injection head")
    inj = classifier.train(injection_examples(folder, attack_instructions(folder)), embed, sources, progress)
    for head, name in ((guard, GUARD_FILE), (inj, INJECTION_FILE), (reply, REPLY_FILE)):
        head.manifest["embedder"] = EMBEDDER
        head.save(out / name)
    keep = lambda head: {k: v for k, v in head.manifest.items() if k != "keys"}
    return {"guard": keep(guard), "reply": keep(reply), "injection": keep(inj), "dir": str(out)}
