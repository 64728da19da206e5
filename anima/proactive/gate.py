"""Notify or not. Every item goes to the inbox; the gate decides whether it is also
pushed now (webhook, desktop), held for later, or never pushed.

    decide(item, now, settings, sent_last_hour, streak) -> ("send" | "hold" | "skip", why)

The checks, in order:

1. Relevance. An item starts with its trigger's relevance (reminders 1.0, to-dos 0.9,
   briefings 0.8, memory dates 0.6, goal check-ins 0.5). It is halved for each item of
   the same kind the user dismissed in a row, most recent first, back to the last one
   they marked done (within 30 days): that is how dismissals teach it. Below 0.25 the
   item stays in the inbox and is not pushed (skip). So a kind goes quiet after two
   dismissals in a row (reminders the user set: three), and marking one item of the
   kind done resets its count.
2. Quiet hours (`proactive.quiet_hours`, local time, may wrap midnight): hold; it goes
   out on the first tick after they end.
3. Rate: at most `proactive.max_per_hour` pushes in the last hour; the rest hold.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from anima.proactive import inbox
from anima.proactive.inbox import Item

BASE = {"reminder": 1.0, "todo": 0.9, "briefing": 0.8, "date": 0.6, "goal": 0.5}
THRESHOLD = 0.25
MEMORY = timedelta(days=30)  # dismissals older than this are forgotten


def streak(store, kind: str, now: datetime) -> int:
    """Items of this kind dismissed in a row (latest first) since the last one marked done."""
    acted = [i for i in inbox.items(store, kind=kind, limit=500) if i.acted_at and i.status in ("done", "dismissed")]
    acted = [i for i in acted if now - datetime.fromisoformat(i.acted_at) <= MEMORY]
    count = 0
    for i in sorted(acted, key=lambda i: i.acted_at, reverse=True):
        if i.status == "done":
            break
        count += 1
    return count


def relevance(item: Item, streak: int) -> float:
    return item.relevance * 0.5**streak


def quiet(now: datetime, spec: str) -> bool:
    """Whether `now` (its wall clock) falls in quiet hours "HH:MM-HH:MM"."""
    if not spec:
        return False
    start, end = (time.fromisoformat(part.strip().zfill(5)) for part in spec.split("-"))
    t = now.time().replace(tzinfo=None)
    return start <= t < end if start <= end else t >= start or t < end


def sent_since(store, since: datetime) -> int:
    """Pushes after `since`."""
    return sum(
        1 for i in inbox.items(store, limit=500) if i.notified_at and datetime.fromisoformat(i.notified_at) > since
    )


def decide(item: Item, now: datetime, settings, sent_last_hour: int, streak: int) -> tuple[str, str]:
    """`settings`: the config's `proactive` section."""
    score = relevance(item, streak)
    if score < THRESHOLD:
        return "skip", f"relevance {score:.2f} < {THRESHOLD} after {streak} dismissed {item.kind} item(s) in a row"
    if quiet(now, settings.quiet_hours):
        return "hold", f"quiet hours ({settings.quiet_hours})"
    if sent_last_hour >= settings.max_per_hour:
        return "hold", f"already {sent_last_hour} notifications this hour (max_per_hour {settings.max_per_hour})"
    return "send", f"relevance {score:.2f}"
