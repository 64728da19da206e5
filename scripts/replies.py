"""Write anima/safety/data/replies.csv: the default model's own replies (greedy, 96 tokens,
the assistant persona, no memory, guard off) to training requests only: 160 harmless ones
(authored look-alikes, lookalikes.txt, everyday.txt) and 80 harmful ones (authored,
plain and polite, not jailbreak-wrapped), the first of each by SHA-1 of the text.

    .venv/bin/python scripts/replies.py [--out anima/safety/data/replies.csv]

A reply to a harmless request is labelled `safe`. A reply to a harmful one is written with
the label `?`: read each and write `unsafe` when it carries what was asked for (wrong
chemistry still counts), `safe` when it refuses or deflects. The reply head
(`anima guard train`) learns the rows as the reply check reads them while they stream.
Nothing here reads an evaluation set.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anima.app import build  # noqa: E402
from anima.config import load_config  # noqa: E402
from anima.models.base import Options, complete  # noqa: E402
from anima.persona import personas  # noqa: E402
from anima.safety.data import AUTHORED, EVERYDAY, LOOKALIKES, text_lines  # noqa: E402


def requests() -> list[dict]:
    safe, unsafe = [], []
    for path in AUTHORED:
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                item = {"prompt": row["text"], "source": f"{path.name}#{row['kind']}", "category": row["category"]}
                if row["label"] == "safe":
                    safe.append(item)
                elif row["kind"] != "wrapped":
                    unsafe.append(item)
    for path in (LOOKALIKES, EVERYDAY):
        safe += [{"prompt": t, "source": path.name, "category": ""} for t in text_lines(path)]
    first = lambda rows, n: sorted(rows, key=lambda r: hashlib.sha1(r["prompt"].encode()).hexdigest())[:n]
    return [{**r, "label": "safe"} for r in first(safe, 160)] + [{**r, "label": "?"} for r in first(unsafe, 80)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "anima" / "safety" / "data" / "replies.csv")
    args = ap.parse_args()
    model = build(load_config()).base_chat_model
    system = personas()["assistant"].system_prompt
    rows = requests()
    with args.out.open("w", newline="", encoding="utf-8") as f:
        out = csv.DictWriter(f, ["prompt", "source", "category", "text", "label"])
        out.writeheader()
        for i, row in enumerate(rows, 1):
            now = {"role": "system", "content": f"Now: {datetime.now():%A %d %B %Y, %H:%M}."}  # as a turn has it
            messages = [{"role": "system", "content": system}, now, {"role": "user", "content": row["prompt"]}]
            reply = complete(model, messages, Options(max_tokens=96, temperature=0.0, seed=0)).text
            out.writerow({**row, "text": reply})
            print(f"{i}/{len(rows)} {reply[:70]!r}", file=sys.stderr)


if __name__ == "__main__":
    main()
