"""Reminders and to-dos, in the user's store.

A reminder has a text and a time ("tomorrow at 9", "in 2 hours", "Friday at 5pm",
"at noon"), or a repeating one ("every Monday at 9", "every weekday", "every 2 weeks");
a to-do has a text and maybe a due time. Both live in one table (`kind` tells them
apart); times are stored as ISO 8601 with the offset they were set in.

The scheduler (`anima.proactive`) asks `due(store, now)` and calls `fire(store, r, now)`
after putting one in the inbox: each due time fires once, and a repeating reminder moves
on to its next time. `complete` closes a one-off; on a repeating one it skips to the next.

A time that cannot be read, names a span ("next week") or is already past ("yesterday")
is a ToolError saying so, with forms that work.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated

from anima.errors import NotFound
from anima.recurrence import Rule, localize, parse_rule
from anima.timeparse import find_times
from anima.tools import Arg, Tool, ToolContext, ToolError, tool, user_message

FORMS = "try 'tomorrow at 9', 'in 2 hours', 'Friday at 5pm', 'at noon' or 'every Monday at 9'"
KINDS = ("reminder", "todo")


@dataclass
class Reminder:
    id: int
    kind: str  # reminder | todo
    text: str
    due: str | None  # next due time, ISO with offset
    every: str | None  # the repeat rule, as written
    status: str  # open | done | cancelled
    fired: str | None  # the due time that last went to the inbox
    created_at: str
    done_at: str | None = None

    def due_at(self) -> datetime | None:
        return datetime.fromisoformat(self.due) if self.due else None

    def describe(self) -> str:
        when = f", due {show(self.due_at())}" if self.due else ""
        repeat = f" ({self.every})" if self.every else ""
        state = "" if self.status == "open" else f" [{self.status}]"
        return f"#{self.id} {self.text}{when}{repeat}{state}"

    def to_dict(self) -> dict:
        return asdict(self)


def local_now() -> datetime:
    return datetime.now().astimezone()


def show(t: datetime) -> str:
    return t.strftime("%a %d %b %H:%M")


# --- reading times ----------------------------------------------------------------------


def parse_when(when: str, now: datetime) -> tuple[datetime, Rule | None]:
    """The first time `when` names, after `now` (aware), and its repeat rule if any.

    A whole day ("tomorrow", "on Friday") means 09:00 that day; a part of a day its
    middle ("tomorrow morning" 09:00, "tonight" 21:00); an exact ISO time is taken as is."""
    text = (when or "").strip()
    if not text:
        raise ToolError("no time given", FORMS)
    wall_now = now.replace(tzinfo=None)
    try:
        rule = parse_rule(text)
    except ValueError as exc:
        raise ToolError(str(exc), FORMS) from exc
    if rule is not None:
        return localize(rule.first(wall_now), now), rule
    try:
        exact = datetime.fromisoformat(text)
    except ValueError:
        exact = None
    if exact is not None and exact.tzinfo is not None:
        t = exact
    else:
        spans = find_times(text, wall_now)
        if not spans:
            raise ToolError(f"cannot tell when '{text}' is", FORMS)
        if len(spans) > 1:
            raise ToolError(
                f"'{text}' names more than one time ({', '.join(repr(s.text) for s in spans)})",
                "give one, e.g. 'Friday at 5pm'",
            )
        span = spans[0]
        length = span.end - span.start
        if length <= timedelta(hours=1):
            t = span.start
        elif length <= timedelta(hours=6):  # morning, afternoon, evening, tonight
            t = span.start + length / 2
        elif span.granularity == "day" and length == timedelta(days=1):
            t = span.start.replace(hour=9)
            if t <= wall_now and t.date() == wall_now.date():
                raise ToolError(f"'{text}' needs a time of day", "e.g. 'today at 5pm' or 'in 2 hours'")
        else:
            raise ToolError(
                f"'{text}' is a span of time ({span.granularity}), not one time",
                "say a day and a time, e.g. 'next Monday at 9'",
            )
        t = localize(t, now)
    if t <= now:
        raise ToolError(
            f"'{text}' is in the past ({show(t)})", "give a time ahead, e.g. 'tomorrow at 9' or 'in 2 hours'"
        )
    return t, None


# --- the table ----------------------------------------------------------------------------


def get(store, reminder_id: int, kind: str | None = None) -> Reminder:
    row = store.reminders.get(reminder_id)
    if row is None or (kind and row["kind"] != kind):
        what = "to-do" if kind == "todo" else "reminder" if kind else "reminder or to-do"
        raise NotFound(
            f"no {what} with id {reminder_id}",
            f"`anima {'todo list' if kind == 'todo' else 'reminders'}` shows the ids",
        )
    return Reminder(**row)


def _add(store, kind: str, text: str, due: datetime | None, rule: Rule | None, now: datetime) -> Reminder:
    if not text or not text.strip():
        raise ToolError(f"the {'to-do' if kind == 'todo' else 'reminder'} has no text", "say what to remember")
    due_at, every = due.isoformat() if due else None, rule.text if rule else None
    rid = store.reminders.add(kind, text.strip(), due_at, every, now.isoformat())
    return get(store, rid)


def _list(store, kind: str | None, include_closed: bool) -> list[Reminder]:
    found = [Reminder(**r) for r in store.reminders.list(kind, include_closed)]
    far = datetime.max.replace(tzinfo=timezone.utc)
    return sorted(found, key=lambda r: (r.status != "open", r.due_at() or far, r.id))


def in_their_words(when: str, now: datetime) -> str:
    """The time to use for a model's `when`: the user's own words when their message
    names exactly one time and `when` is not a repeating one. A small model reads
    "tomorrow at 9" as 21:00 as often as not; the user's sentence does not change."""
    said = user_message.get()
    if not said:
        return when
    try:
        if parse_rule(when.strip()) is not None:
            return when
    except ValueError:
        pass
    spans = find_times(said, now.replace(tzinfo=None))
    if len(spans) != 1:
        return when
    try:
        parse_when(spans[0].text, now)
    except ToolError:  # in the past, or not a time of its own: the model's reading stands
        return when
    return spans[0].text


def add_reminder(store, text: str, when: str, now: datetime | None = None) -> Reminder:
    now = now or local_now()
    due, rule = parse_when(when, now)
    return _add(store, "reminder", text=text, due=due, rule=rule, now=now)


def add_todo(store, text: str, when: str | None = None, now: datetime | None = None) -> Reminder:
    now = now or local_now()
    due, rule = parse_when(when, now) if when else (None, None)
    return _add(store, "todo", text=text, due=due, rule=rule, now=now)


def list_reminders(store, include_closed: bool = False) -> list[Reminder]:
    """Reminders, open ones first, soonest first."""
    return _list(store, "reminder", include_closed)


def list_todos(store, include_closed: bool = False) -> list[Reminder]:
    return _list(store, "todo", include_closed)


def open_items(store) -> list[Reminder]:
    """Every open reminder and to-do, soonest first (those without a time last)."""
    return _list(store, None, False)


def next_time(r: Reminder, now: datetime) -> tuple[datetime, int]:
    """A repeating reminder's next time after now (and after its current one), and how
    many of its times were passed over."""
    rule, due = parse_rule(r.every), r.due_at()
    wall, skipped = rule.next_after(due.replace(tzinfo=None), max(now, due).astimezone(due.tzinfo).replace(tzinfo=None))
    return localize(wall, now), skipped


def complete(store, reminder_id: int, now: datetime | None = None) -> Reminder:
    """Done: a one-off closes; a repeating one moves to its next time."""
    now = now or local_now()
    r = get(store, reminder_id)
    if r.status != "open":
        raise ToolError(f"#{r.id} is already {r.status}", "nothing to do")
    if r.every and r.due:
        store.reminders.update(r.id, due=next_time(r, now)[0].isoformat())
    else:
        store.reminders.update(r.id, status="done", done_at=now.isoformat())
    return get(store, r.id)


def done(store, todo_id: int, now: datetime | None = None) -> Reminder:
    """Tick off a to-do."""
    get(store, todo_id, "todo")
    return complete(store, todo_id, now)


def cancel(store, reminder_id: int, now: datetime | None = None) -> Reminder:
    r = get(store, reminder_id)
    if r.status != "open":
        raise ToolError(f"#{r.id} is already {r.status}", "nothing to cancel")
    store.reminders.update(r.id, status="cancelled", done_at=(now or local_now()).isoformat())
    return get(store, r.id)


def due(store, now: datetime) -> list[Reminder]:
    """Open reminders and to-dos whose time has come and that have not fired for it yet."""
    return [r for r in open_items(store) if r.due and r.due_at() <= now and r.fired != r.due]


def fire(store, r: Reminder, now: datetime) -> int:
    """Record that `r` went to the inbox for its current time; a repeating one moves on to
    its next time. Returns how many of its times were missed on the way (0 normally)."""
    if not r.every:
        store.reminders.update(r.id, fired=r.due)
        return 0
    nxt, skipped = next_time(r, now)
    store.reminders.update(r.id, fired=r.due, due=nxt.isoformat())
    return skipped


# --- for the model ---------------------------------------------------------------------------


Id = Annotated[int, Arg("the id from the list")]
Closed = Annotated[bool, Arg("also show done and cancelled ones")]
WHEN = "when, in English: 'tomorrow at 9', 'in 2 hours', 'Friday at 5pm', 'every Monday at 9'"


def tools(ctx: ToolContext) -> list[Tool]:
    store = ctx.store

    def remind(text: Annotated[str, Arg("what to remind of")], when: Annotated[str, Arg(WHEN)]) -> str:
        """Set a reminder at a time, once or repeating."""
        r = add_reminder(store, text, in_their_words(when, ctx.now()), ctx.now())
        return f"reminder #{r.id} set for {show(r.due_at())}" + (f", then {r.every}" if r.every else "") + f": {r.text}"

    def reminders_list(include_closed: Closed = False) -> str:
        """List the user's reminders."""
        return "\n".join(r.describe() for r in list_reminders(store, include_closed)) or "no reminders"

    def reminder_done(reminder_id: Id) -> str:
        """Mark a reminder done (a repeating one moves to its next time)."""
        return "done: " + complete(store, reminder_id, ctx.now()).describe()

    def reminder_cancel(reminder_id: Id) -> str:
        """Cancel a reminder for good."""
        return "cancelled: " + cancel(store, reminder_id, ctx.now()).describe()

    def todo_add(text: Annotated[str, Arg("the task")], due: Annotated[str, Arg("optional due time")] = "") -> str:
        """Add a to-do, optionally with a due time."""
        return (
            "added to-do "
            + add_todo(store, text, in_their_words(due, ctx.now()) if due else None, ctx.now()).describe()
        )

    def todo_list(include_closed: Closed = False) -> str:
        """List the user's to-dos."""
        return "\n".join(r.describe() for r in list_todos(store, include_closed)) or "no to-dos"

    def todo_done(todo_id: Id) -> str:
        """Tick off a to-do."""
        return "done: " + done(store, todo_id, ctx.now()).describe()

    # Each tool answers to its own verbs: a small model offered all four for "remind me
    # to ..." picked reminder_done as often as remind.
    words = r"\bremind me\b|\bset an? reminder\b|\bevery (?:day|week|month|mon|tue|wed|thu|fri|sat|sun)"
    listing = r"\b(?:my|what|which|list|show|any)\b.{0,20}\breminders\b"
    closing = r"\b(?:done|did|finished|completed?)\b.{0,30}\breminder\b|\breminder\b.{0,30}\b(?:done|finished)\b"
    cancelling = r"\b(?:cancel|delete|remove|drop)\b.{0,30}\breminder"
    todo_words = r"\bto-?dos?\b|\btasks?\b|\bto do list\b"
    return [
        tool(remind, side_effects=True, triggers=words, own_words=True),
        tool(reminders_list, triggers=listing, own_words=True),
        tool(reminder_done, side_effects=True, triggers=closing, own_words=True),
        tool(reminder_cancel, side_effects=True, triggers=cancelling, own_words=True),
        tool(todo_add, side_effects=True, triggers=todo_words, own_words=True),
        tool(todo_list, triggers=todo_words, own_words=True),
        tool(todo_done, side_effects=True, triggers=todo_words, own_words=True),
    ]
