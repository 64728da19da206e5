"""Labelled text for training and evaluating the guard.

`read_labelled` reads any CSV or JSONL with a text column and a label column; the
named public sets (in `../shared/data/safety`, or wherever `ANIMA_SAFETY_DATA` points)
have loaders that also map their categories onto the hazard taxonomy.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from anima.errors import BadInput
from anima.safety.taxonomy import CATEGORIES, DONOTANSWER, HARMBENCH, JBB, MODERATION


@dataclass(frozen=True)
class Example:
    text: str
    unsafe: bool
    categories: tuple[str, ...] = ()
    source: str = ""


def safety_data_dir() -> Path | None:
    """Where the public safety sets are: $ANIMA_SAFETY_DATA, else a `shared/data/safety`
    folder beside the working directory or beside this checkout."""
    if explicit := os.environ.get("ANIMA_SAFETY_DATA"):
        return Path(explicit)
    here = Path(__file__).resolve().parents[2]
    for base in (Path.cwd(), Path.cwd().parent, here, here.parent):
        candidate = base / "shared" / "data" / "safety"
        if candidate.is_dir():
            return candidate
    return None


def moderation(path: Path) -> list[Example]:
    out = []
    for line in _lines(path):
        row = json.loads(line)
        cats = tuple(dict.fromkeys(MODERATION[k] for k, v in row.items() if k in MODERATION and v == 1))
        out.append(Example(row["prompt"], bool(cats), cats, path.name))
    return out


def harmbench(path: Path) -> list[Example]:
    out = []
    for row in _csv(path):
        text = f"{row['ContextString']}\n\n{row['Behavior']}" if row.get("ContextString") else row["Behavior"]
        out.append(Example(text, True, (HARMBENCH.get(row["SemanticCategory"], "S2"),), path.name))
    return out


def jbb(path: Path, unsafe: bool) -> list[Example]:
    return [
        Example(row["goal"], unsafe, (JBB.get(row["category"], "S2"),) if unsafe else (), path.name)
        for row in _csv(path)
    ]


def bipia_contexts(folder: Path) -> list[Example]:
    """Clean emails and code answers: ordinary text that is not a hazard."""
    out = []
    for name in ("email_train.jsonl", "code_train.jsonl"):
        for line in _lines(folder / name):
            row = json.loads(line)
            context = row["context"] if isinstance(row["context"], str) else "\n".join(row["context"])
            out.append(Example(context, False, (), name))
            if isinstance(row.get("question"), str):
                out.append(Example(row["question"], False, (), name + "#question"))
    return out


EVERYDAY = Path(__file__).parent / "data" / "everyday.txt"


def everyday() -> list[Example]:
    """Ordinary requests to a personal assistant (shipped with anima): the public sets'
    harmful side is mostly short imperative requests and their benign side mostly long
    texts, so without these "plan my week around my marathon training" looked unsafe."""
    return [Example(line, False, (), EVERYDAY.name) for line in text_lines(EVERYDAY)]


LOOKALIKES = Path(__file__).parent / "data" / "lookalikes.txt"


def lookalikes() -> list[Example]:
    """Harmless messages whose words also name harm (poach salmon, kill a job, the Munich
    massacre as history), in everyday domains the authored requests' look-alikes missed:
    written for the guard by a helper (shipped with anima)."""
    return [Example(line, False, (), LOOKALIKES.name) for line in text_lines(LOOKALIKES)]


OWN_WORDS = Path(__file__).parent / "data" / "own_words.txt"


def own_words() -> list[Example]:
    """Sentences of the user's own to-dos, notes and how-tos (shipped with anima; written
    by the local model): imperative, yet data, not instructions to the assistant."""
    return [Example(line, False, (), OWN_WORDS.name) for line in text_lines(OWN_WORDS)]


REPLIES = Path(__file__).parent / "data" / "replies.csv"
# A streaming reply is shown a piece at a time (a sentence, or HOLD_CHARS characters), each
# after the reply check has read the reply so far (its last CHECK_WINDOW characters).
HOLD_CHARS, CHECK_WINDOW = 60, 600


def reply_reads(text: str, hold: int = HOLD_CHARS, window: int = CHECK_WINDOW) -> list[str]:
    """What the reply check reads of a reply as it streams: the reply so far (its last
    `window` characters) at each sentence end or every `hold` characters, then the whole."""
    reads, start = [], 0
    for end in range(1, len(text)):
        piece = text[start:end]
        if len(piece) >= hold or (len(piece) >= 16 and piece[-1] in ".!?:;\n" and text[end].isspace()):
            reads.append(text[:end][-window:])
            start = end
    return [*reads, text]


def replies() -> list[Example]:
    """The default model's own replies to training requests (`anima/safety/data/replies.csv`,
    `scripts/replies.py`), labelled by reading, each as the reply check reads it while it
    streams (`reply_reads`): the reply head learns from replies, whose wording requests
    never have, and not from requests alone."""
    out = []
    with REPLIES.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            unsafe = row["label"] == "unsafe"
            cats = (row["category"],) if unsafe and row["category"] in CATEGORIES else ()
            out += [Example(t, unsafe, cats, "replies.csv") for t in reply_reads(row["text"])]
    return out


AUTHORED = sorted((Path(__file__).parent / "data").glob("requests_*.csv"))


def authored() -> list[Example]:
    """Requests written for anima's guard (shipped with it; `anima/safety/data/requests_*.csv`,
    columns text, label, category, kind): harmful requests across every hazard category,
    plain and wrapped in jailbreaks, each beside harmless look-alikes that share its words.
    Written fresh, without reading any evaluation set; rows close to one are dropped
    (tests/test_safety.py checks it)."""
    out = []
    for path in AUTHORED:
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                unsafe = row["label"] == "unsafe"
                cats = (row["category"],) if unsafe and row["category"] in CATEGORIES else ()
                out.append(Example(row["text"], unsafe, cats, f"{path.name}#{row['kind']}"))
    return out


def persona_examples() -> list[Example]:
    from anima.persona import BUILTIN_DIR, load_persona

    return [
        Example(p.example_user, False, (), "personas")
        for p in map(load_persona, sorted(BUILTIN_DIR.glob("*.toml")))
        if p.example_user
    ]


def donotanswer(folder: Path) -> list[Example]:
    """Do-Not-Answer's questions that ask for harm (malicious uses, information hazards,
    discrimination). Its chatbot-as-human and misinformation questions deserve a careful
    answer, not a refusal, and are not read."""
    out = []
    for name, code in DONOTANSWER.items():
        for line in _lines(folder / f"{name}.jsonl"):
            out.append(Example(json.loads(line)["prompt"], True, (code,), f"donotanswer/{name}"))
    return out


TEST_SHARE = 3  # in 10: the public sets' rows whose text hashes there are the test split, never trained on


def split_of(text: str) -> str:
    """ "train" or "test", fixed by the text alone (so a row is on the same side in every
    run, whichever file it comes from)."""
    digest = hashlib.sha1(" ".join(text.lower().split()).encode("utf-8", "surrogatepass")).digest()
    return "test" if digest[0] % 10 < TEST_SHARE else "train"


def public_sets(folder: Path) -> list[Example]:
    """The public labelled sets, whole: OpenAI moderation, HarmBench, JailbreakBench harmful
    and benign, BIPIA's clean contexts."""
    return (
        moderation(folder / "openai_moderation_1680.jsonl")
        + harmbench(folder / "harmbench_behaviors_text_val.csv")
        + jbb(folder / "jbb_behaviors_harmful.csv", True)
        + jbb(folder / "jbb_behaviors_benign.csv", False)
        + bipia_contexts(folder / "bipia")
    )


def training_set(folder: Path) -> list[Example]:
    """Everything the shipped guard head learns from: the train split of the public sets,
    anima's own everyday requests, look-alikes and persona examples, and the authored
    requests with their look-alikes. (Do-Not-Answer's harmful questions, tried as
    positives, taught the head that "How can I ...?" is a hazard: 20% false alarms on
    tests/data/guard_probes.csv without contrasts, 15% with the authored ones; with a safe
    look-alike written for each of them too, validation recall fell 0.88 -> 0.84 and false
    alarms rose 0.038 -> 0.054. Its train split stays unused.)"""
    return (
        [e for e in public_sets(folder) if split_of(e.text) == "train"]
        + everyday()
        + lookalikes()
        + persona_examples()
        + authored()
    )


def held_out(folder: Path) -> list[Example]:
    """The test split: the rows of the public sets and of Do-Not-Answer's harmful
    questions that the head never trains on and nothing is tuned on."""
    rows = public_sets(folder) + donotanswer(folder / "donotanswer")
    return [e for e in rows if split_of(e.text) == "test"]


UNSAFE_LABELS = ("1", "true", "unsafe", "yes", "harmful", "toxic")  # label values that mean unsafe


def read_labelled(
    path: Path,
    fmt: str = "auto",
    text_field: str | None = None,
    label_field: str | None = None,
    unsafe_values: list[str] | None = None,
) -> list[Example]:
    """A labelled prompt file: `moderation` (OpenAI's release), or any `csv` / `jsonl`
    with a text column and a label column. Labels count as unsafe when they are one of
    `unsafe_values` (default: 1, true, unsafe, yes, harmful)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"no such file: {path}", "give the path of a .csv or .jsonl file")
    if fmt == "auto":
        fmt = "csv" if path.suffix.lower() == ".csv" else "jsonl"
        if fmt == "jsonl" and text_field is None and label_field is None and _looks_like_moderation(path):
            fmt = "moderation"
    if fmt == "moderation":
        return moderation(path)
    if fmt not in ("csv", "jsonl"):
        raise BadInput(f"unknown format {fmt!r}", "use moderation, csv or jsonl")
    try:
        rows = _csv(path) if fmt == "csv" else [json.loads(line) for line in _lines(path)]
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as exc:
        raise BadInput(f"{path} is not valid {fmt}: {exc}", "check the file, or pass --format") from exc
    if not rows:
        raise BadInput(f"{path} has no rows", "give a file with a header and labelled rows")
    if not all(isinstance(r, dict) for r in rows):
        raise BadInput(f"{path}: every line must be a JSON object", 'one {"text": ..., "label": ...} per line')
    keys = list(rows[0].keys())
    text_field = text_field or _pick(keys, ("text", "prompt", "goal", "content", "message", "input", "Behavior"))
    label_field = label_field or _pick(keys, ("label", "unsafe", "is_unsafe", "harmful", "toxic", "flagged", "class"))
    if text_field not in keys or label_field not in keys:
        raise BadInput(
            f"{path} has columns {keys}; need a text and a label column",
            "name them with --text-field and --label-field",
        )
    positive = {v.strip().lower() for v in (unsafe_values or UNSAFE_LABELS)}
    return [
        Example(str(r.get(text_field) or ""), str(r.get(label_field)).strip().lower() in positive, (), path.name)
        for r in rows
    ]


def _pick(keys: list[str], wanted: tuple[str, ...]) -> str:
    lower = {k.lower(): k for k in keys}
    return next((lower[w.lower()] for w in wanted if w.lower() in lower), "")


def _looks_like_moderation(path: Path) -> bool:
    first = next(iter(_lines(path)), "")
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(row, dict) and "prompt" in row and any(k in row for k in MODERATION)


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {path} as UTF-8 text: {exc}", "give a CSV or JSONL text file") from exc


def text_lines(path: Path) -> list[str]:
    """The lines of a text file, without blank lines and `#` comments."""
    return [line.strip() for line in _lines(path) if not line.lstrip().startswith("#")]


def _csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {path} as UTF-8 text: {exc}", "give a CSV or JSONL text file") from exc
