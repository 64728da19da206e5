"""The inbox: everything anima raised on its own (due reminders, dates it remembered,
goal check-ins, briefings), each with why. The user marks items done, snoozes or
dismisses them; dismissals teach the gate (`anima.proactive.gate`).

An item's `key` says what it is about ("reminder:3@2024-05-13T09:00:00+02:00",
"date:12@2024-12-03"): `add` keeps the first item with a key and ignores the rest, which
is what makes every trigger fire once, across restarts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from anima.errors import BadInput, NotFound
from anima.tools import reminders

STATUSES = ("new", "done", "snoozed", "dismissed")


@dataclass
class Item:
    kind: str  # reminder | todo | date | goal | briefing
    title: str
    body: str = ""
    reason: str = ""  # why anima raised it
    key: str | None = None
    data: dict = field(default_factory=dict)
    relevance: float = 1.0  # 0-1, set by the trigger; the gate lowers it for kinds the user dismisses
    created: str = ""
    status: str = "new"  # new | done | snoozed | dismissed
    snooze_until: str | None = None
    acted_at: str | None = None
    notify: str = "pending"  # pending | sent | skipped: whether it was (or will be) pushed
    notified_at: str | None = None
    id: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def add(store, item: Item, now: datetime) -> Item | None:
    """Put an item in the inbox; None when one with the same key is there already."""
    row = item.to_dict()
    row.pop("id")
    row["created"] = row["created"] or now.isoformat()
    item_id = store.inbox.add(row)
    return None if item_id is None else get(store, item_id)


def get(store, item_id: int) -> Item:
    row = store.inbox.get(item_id)
    if row is None:
        raise NotFound(f"no inbox item with id {item_id}", "`anima inbox --all` shows the ids")
    return Item(**row)


def update(store, item_id: int, expect: dict | None = None, **changes) -> bool:
    """Set columns; with `expect`, only while the item still has those values (False if not)."""
    return store.inbox.update(item_id, expect, **changes)


def items(store, status: str | None = None, kind: str | None = None, limit: int = 200) -> list[Item]:
    """Items, newest first; of one status and/or kind if given."""
    return [Item(**r) for r in store.inbox.list(status, kind, limit)]


def list_items(store, now: datetime, all: bool = False) -> list[Item]:
    """What needs the user: new items, and snoozed ones whose time has come. `all`: everything."""
    wake(store, now)
    return items(store) if all else items(store, "new")


def wake(store, now: datetime) -> list[Item]:
    """Snoozed items whose time has come become new again (and may notify again)."""
    due = [
        i
        for i in items(store, "snoozed", limit=10_000)
        if i.snooze_until and datetime.fromisoformat(i.snooze_until) <= now
    ]
    # Only while still snoozed: a second process waking it too must not make it pending again.
    expect = {"status": "snoozed"}
    return [
        i
        for i in due
        if update(store, i.id, expect, status="new", snooze_until=None, notify="pending", notified_at=None)
    ]


def _mark(store, item_id: int, status: str, now: datetime, **more) -> Item:
    get(store, item_id)
    update(store, item_id, status=status, acted_at=now.isoformat(), **more)
    return get(store, item_id)


def done(store, item_id: int, now: datetime) -> Item:
    """Done; for a one-off reminder or to-do, that closes it too."""
    item = _mark(store, item_id, "done", now)
    rid = item.data.get("reminder_id")
    if rid and not item.data.get("every"):
        try:
            if reminders.get(store, rid).status == "open":
                reminders.complete(store, rid, now)
        except NotFound:  # deleted since: the item is still done
            pass
    return item


def dismiss(store, item_id: int, now: datetime) -> Item:
    """Not wanted: kept, and counted against its kind by the gate."""
    return _mark(store, item_id, "dismissed", now)


def snooze(store, item_id: int, until: str | datetime, now: datetime) -> Item:
    """Out of the way until a time ("tomorrow at 9", "in 2 hours")."""
    if isinstance(until, str):
        until, rule = reminders.parse_when(until, now)
        if rule is not None:
            raise BadInput("a snooze ends once, it does not repeat", "give one time, e.g. 'tomorrow at 9'")
    if until <= now:
        raise BadInput("a snooze must end in the future", "e.g. 'in 2 hours' or 'tomorrow at 9'")
    return _mark(store, item_id, "snoozed", now, snooze_until=until.isoformat())
