"""What anima raises on its own. Each trigger puts items in the inbox, with the reason,
and returns the ones that are new:

    due_reminders   reminders and to-dos whose time has come (late ones say they were missed)
    memory_dates    dates in memories, `lookahead_days` ahead: a memory's ref_date or a day
                    named in its text; birthdays and anniversaries come back every year
    goal_checkins   each open goal once a week (if `anima.tools.goals` is there)
    daily_briefing  `briefing(...)`: today's calendar, due items, open goals, coming dates,
                    and what the user may need, every line with its reason

A trigger is `(store, now, settings, late) -> list[Item]`: `settings` is the config's
`proactive` section, `late` the time the job was due when it runs late (anima was off).
Items carry a key, so running a trigger twice raises nothing twice.
"""

from __future__ import annotations

import importlib
import re
from datetime import date, datetime, timedelta

from anima.proactive import inbox
from anima.proactive.gate import BASE
from anima.proactive.inbox import Item
from anima.timeparse import find_times
from anima.tools import reminders
from anima.tools.reminders import show

GRACE = timedelta(minutes=5)  # later than this, a reminder says it was missed while anima was off
YEARLY = re.compile(r"\b(?:birthday|b-?day|anniversary)\b", re.I)
NEEDS = [  # what a coming date may call for
    (re.compile(r"\b(?:birthday|b-?day|anniversary)\b", re.I), "a card, a message or a gift"),
    (re.compile(r"\b(?:trip|flight|flying|fly|travel\w*|vacation|holiday)\b", re.I), "tickets, documents and packing"),
    (re.compile(r"\b(?:deadline|due|exam|interview|presentation|submit\w*)\b", re.I), "time set aside to prepare"),
]


def _optional(module: str, name: str):
    """A function from a built-in tool that may not be installed (goals, calendar)."""
    try:
        return getattr(importlib.import_module(f"anima.tools.{module}"), name)
    except (ImportError, AttributeError):
        return None


def _in_days(n: int) -> str:
    return "today" if n == 0 else "tomorrow" if n == 1 else f"in {n} days"


# --- reminders ------------------------------------------------------------------------------


def due_reminders(store, now: datetime, settings=None, late: datetime | None = None) -> list[Item]:
    added = []
    for r in reminders.due(store, now):
        due = r.due_at()
        reason = f"you asked to be reminded at {show(due)}" if r.kind == "reminder" else f"a to-do due {show(due)}"
        if r.every:
            reason += f" ({r.every})"
        missed = reminders.next_time(r, now)[1] if r.every else 0
        if now - due > GRACE:
            reason += "; missed while anima was off" + (f", with {missed} later time(s) skipped" if missed else "")
        item = Item(
            r.kind,
            r.text,
            f"due {show(due)}",
            reason,
            key=f"{r.kind}:{r.id}@{r.due}",
            data={"reminder_id": r.id, "every": r.every},
            relevance=BASE[r.kind],
        )
        new = inbox.add(store, item, now)  # recorded first: a crash before `fire` cannot raise it twice
        reminders.fire(store, r, now)
        if new:
            added.append(new)
    return added


# --- dates found in memories ------------------------------------------------------------------


def memory_day(memory, today: date) -> date | None:
    """The next day (today or later) a memory is about, or None: its ref_date, else a
    single day named in its text (read as of when it was learned). Birthdays and
    anniversaries recur every year."""
    day = None
    if memory.ref_date and len(memory.ref_date) == 10:
        try:
            day = date.fromisoformat(memory.ref_date)
        except ValueError:  # "2023-02-30": no such day
            return None
    else:
        said = datetime.fromisoformat(memory.created_at).replace(tzinfo=None)
        spans = [
            s for s in find_times(memory.text, said) if s.granularity == "day" and s.end - s.start == timedelta(days=1)
        ]
        day = spans[0].start.date() if len(spans) == 1 else None
    if day is None:
        return None
    if YEARLY.search(memory.text):
        for year in (today.year, today.year + 1):
            try:
                day = day.replace(year=year)
            except ValueError:  # 29 February
                day = date(year, 2, 28)
            if day >= today:
                return day
    return day if day >= today else None


def upcoming_dates(store, today: date, lookahead_days: int) -> list[tuple[date, object]]:
    """(day, memory) for current memories about a day in the next `lookahead_days` days, soonest first."""
    found = []
    for m in store.list_memories(limit=100_000):  # ~0.1 ms each to read
        day = memory_day(m, today)
        if day is not None and (day - today).days <= lookahead_days:
            found.append((day, m))
    return sorted(found, key=lambda x: (x[0], x[1].id))


def _need(text: str) -> str | None:
    return next((need for rx, need in NEEDS if rx.search(text)), None)


def memory_dates(store, now: datetime, settings, late: datetime | None = None) -> list[Item]:
    added = []
    for day, m in upcoming_dates(store, now.date(), settings.lookahead_days):
        n = (day - now.date()).days
        need = _need(m.text)
        item = Item(
            "date",
            f"{_in_days(n).capitalize()} ({day:%a %d %b}): {m.text}",
            f"you may need {need}" if need else "",
            f'from your memory #{m.id} "{m.text}"; '
            f"dates are raised {settings.lookahead_days} days ahead (proactive.lookahead_days)",
            key=f"date:{m.id}@{day.isoformat()}",
            data={"memory_id": m.id, "date": day.isoformat()},
            relevance=BASE["date"],
        )
        if new := inbox.add(store, item, now):
            added.append(new)
    return added


# --- goals -------------------------------------------------------------------------------------


def goal_checkins(store, now: datetime, settings=None, late: datetime | None = None) -> list[Item]:
    open_goals = _optional("goals", "open_goals")
    if open_goals is None:
        return []
    year, week, _ = now.isocalendar()
    added = []
    for g in open_goals(store):
        reason = "a weekly check-in on an open goal"
        if g.get("due"):
            left = (date.fromisoformat(g["due"][:10]) - now.date()).days
            reason += f"; it is due {g['due'][:10]} ({_in_days(left) if left >= 0 else f'{-left} days ago'})"
        item = Item(
            "goal",
            f'How is "{g["title"]}" going? ({g.get("progress", 0)}% done)',
            "",
            reason,
            key=f"goal:{g['id']}@{year}-W{week:02d}",
            data={"goal_id": g["id"]},
            relevance=BASE["goal"],
        )
        if new := inbox.add(store, item, now):
            added.append(new)
    return added


# --- the daily briefing -----------------------------------------------------------------------


def _clock(value) -> str:
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return text[11:16] if "T" in text else "all day"


def briefing(store, now: datetime, lookahead_days: int = 3) -> Item:
    """Today at a glance: each line is {section, text, reason}; the item's body is them as text."""
    lines: list[dict] = []

    def line(section: str, text: str, reason: str) -> None:
        lines.append({"section": section, "text": text, "reason": reason})

    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)
    events_between = _optional("calendar", "events_between")
    events = events_between(store, start, end) if events_between else []
    for e in events:
        where = f" at {e['location']}" if e.get("location") else ""
        line("calendar", f"{_clock(e['start'])} {e['title']}{where}", "on your calendar today")

    overdue = []
    for r in reminders.open_items(store):
        due = r.due_at()
        what = "reminder" if r.kind == "reminder" else "to-do"
        if due is None:
            if r.kind == "todo":
                line("todo", r.text, "an open to-do")
        elif due < now:
            overdue.append(r)
            line("due", f"{r.text} (overdue since {show(due)})", f"a {what} past its time and still open")
        elif due < max(end, now + timedelta(hours=12)):  # late in the evening, the night ahead counts
            today = due < end
            line(
                "due",
                f"{due:%H:%M}{'' if today else ' tomorrow'} {r.text}",
                f"a {what} due {'today' if today else 'within 12 hours'}",
            )

    open_goals = _optional("goals", "open_goals")
    goals = open_goals(store) if open_goals else []
    for g in goals:
        line(
            "goals",
            f"{g['title']}: {g.get('progress', 0)}% done" + (f", due {g['due'][:10]}" if g.get("due") else ""),
            "an open goal",
        )

    dates = upcoming_dates(store, now.date(), lookahead_days)
    for day, m in dates:
        line("dates", f"{_in_days((day - now.date()).days)}: {m.text}", f"from your memory #{m.id}")

    # What the user may need: each from one of the lines above, with why.
    for day, m in dates:
        if need := _need(m.text):
            line("needs", f'{need}, for "{m.text}"', f"{_in_days((day - now.date()).days)}, from your memory #{m.id}")
    for e in events:
        if e.get("location") and _clock(e["start"]) != "all day":
            line(
                "needs",
                f"leave in time for {e['title']} at {e['location']} ({_clock(e['start'])})",
                "a calendar event at a place",
            )
    if overdue:
        line("needs", f"clear or move {len(overdue)} overdue item(s)", "past their time and still open")
    for g in goals:
        if (
            g.get("due")
            and 0 <= (date.fromisoformat(g["due"][:10]) - now.date()).days <= max(lookahead_days, 7)
            and g.get("progress", 0) < 100
        ):
            line(
                "needs",
                f'time for "{g["title"]}", due {g["due"][:10]}',
                f"a goal due soon, {g.get('progress', 0)}% done",
            )

    heads = {
        "calendar": "Today",
        "due": "Due",
        "todo": "To-dos",
        "goals": "Goals",
        "dates": "Coming up",
        "needs": "You may need",
    }
    body = []
    for section, head in heads.items():
        mine = [x for x in lines if x["section"] == section]
        if mine:
            body.append(f"{head}:")
            body += [f"  - {x['text']}  (why: {x['reason']})" for x in mine]
    return Item(
        "briefing",
        f"Your briefing for {now:%a %d %b}",
        "\n".join(body) or "Nothing scheduled, due or coming up.",
        "your daily briefing",
        key=f"briefing:{now.date().isoformat()}",
        data={"lines": lines},
        relevance=BASE["briefing"],
    )


def daily_briefing(store, now: datetime, settings, late: datetime | None = None) -> list[Item]:
    item = briefing(store, now, settings.lookahead_days)
    item.reason = f"your daily briefing at {settings.briefing_at} (proactive.briefing_at)"
    if late is not None:
        item.reason += f"; late: it was due {show(late)}, missed while anima was off"
    new = inbox.add(store, item, now)
    return [new] if new else []
