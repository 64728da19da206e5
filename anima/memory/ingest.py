"""Read a conversation history from another tool, with its timestamps.

- LoCoMo-style JSON (a sample, or a list of them): sessions of turns, each session
  with a date like "1:56 pm on 8 May, 2023". `me` (default: speaker_a) is the user.
- ChatGPT's `conversations.json` export: every conversation's user and assistant
  messages with their `create_time`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from anima.errors import BadInput


@dataclass
class HistoryMessage:
    text: str
    role: str  # user | assistant | other
    speaker: str
    when: datetime
    source: str
    ref: str | None = None


def read_history(path: Path, me: str | None = None) -> list[HistoryMessage]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}", "check the path") from exc
    except (ValueError, RecursionError) as exc:  # RecursionError: brackets nested thousands deep
        raise BadInput(f"{path} is not JSON: {exc}", "give a LoCoMo JSON file or a ChatGPT conversations.json") from exc
    items = data if isinstance(data, list) else [data]
    if items and all(isinstance(i, dict) and "conversation" in i for i in items):
        return [m for sample in _locomo_samples(path) for m in sample_messages(sample, me)]
    if items and all(isinstance(i, dict) and "mapping" in i for i in items):
        return _chatgpt(items)
    raise BadInput(
        f"{path} is neither a LoCoMo file nor a ChatGPT export",
        "LoCoMo samples have a 'conversation'; ChatGPT conversations a 'mapping'",
    )


def _locomo_samples(path: Path):
    from anima.memory.locomo import load_locomo  # the one LoCoMo parser, shared with the benchmark

    try:
        return load_locomo(path)
    except ValueError as exc:
        raise BadInput(f"{path}: {exc}", "check the file against the LoCoMo format") from exc


def sample_messages(sample, me: str | None = None) -> list[HistoryMessage]:
    """A LoCoMo sample's turns in order; turns within a session are a second apart,
    so their order survives sorting by time."""
    from anima.timeparse import parse_session_time

    me = me or sample.speaker_a
    found = []
    for session in sample.sessions:
        try:
            start = parse_session_time(session.time)
        except ValueError as exc:
            raise BadInput(
                f"session {session.index} of {sample.sample_id} has an unreadable date {session.time!r}",
                "dates look like '1:56 pm on 8 May, 2023'",
            ) from exc
        for n, turn in enumerate(session.turns):
            role = "user" if turn.speaker == me else "other"
            found.append(
                HistoryMessage(
                    turn.text,
                    role,
                    speaker=turn.speaker,
                    when=start + timedelta(seconds=n),
                    source=f"locomo:{sample.sample_id}",
                    ref=turn.dia_id,
                )
            )
    return found


def _chatgpt(conversations: list[dict]) -> list[HistoryMessage]:
    found = []
    for conv in conversations:
        mapping = conv.get("mapping")
        for node in mapping.values() if isinstance(mapping, dict) else []:
            message = _get(node, "message")
            role = _get(_get(message, "author"), "role")
            parts = _get(_get(message, "content"), "parts")
            parts = [p for p in parts if isinstance(p, str) and p.strip()] if isinstance(parts, list) else []
            if role not in ("user", "assistant") or not parts or not _get(message, "create_time"):
                continue
            try:
                when = datetime.fromtimestamp(float(message["create_time"]), tz=timezone.utc)
            except (TypeError, ValueError, OverflowError, OSError) as exc:
                raise BadInput(
                    f"message {str(message.get('id'))[:40]!r} has an unreadable create_time "
                    f"{str(message['create_time'])[:40]!r}",
                    "it is seconds since 1970, as ChatGPT exports it",
                ) from exc
            ref = message.get("id")
            found.append(
                HistoryMessage(
                    "\n".join(parts),
                    role,
                    speaker="user" if role == "user" else "chatgpt",
                    when=when,
                    source="chatgpt",
                    ref=ref if isinstance(ref, str) else None,
                )
            )
    found.sort(key=lambda m: m.when)
    return found


def _get(node, key: str):
    """node[key] when node is a JSON object; anything else reads as missing (and is skipped)."""
    return node.get(key) if isinstance(node, dict) else None
