"""Calendar: events imported from .ics files or added by hand; "what's on Thursday?".

An event keeps its wall-clock start and end in its own time zone (`tz`, an IANA name),
floating times and whole days without one. A repeating event is stored once, with its
RRULE (and skipped dates), and expanded when asked about (dateutil's rrule), so a weekly
meeting is one row. Moved occurrences (RECURRENCE-ID) become events of their own.
Everything a caller gets back is in local time, without a zone: start/end as
'YYYY-MM-DDTHH:MM', whole days at 00:00 with all_day True.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrulestr

from anima.errors import BadInput
from anima.timeparse import TimeSpan, find_times, query_range
from anima.tools import Arg, Tool, ToolContext, tool

REPEATS = {"daily": "FREQ=DAILY", "weekly": "FREQ=WEEKLY", "monthly": "FREQ=MONTHLY", "yearly": "FREQ=YEARLY"}


def local(t: datetime) -> datetime:
    """Local wall-clock time without a zone (a naive time is taken as local already)."""
    return t.astimezone().replace(tzinfo=None) if t.tzinfo else t


# --- how an event's times are kept: wall-clock text plus a zone name --------------------------


def _zone_of(t: datetime) -> str | None:
    key = getattr(t.tzinfo, "key", None)
    try:
        return key if key and ZoneInfo(key) else None
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _wall(t: date | datetime, tz: str | None) -> str:
    """A date or time as stored for an event in zone `tz` (None: local/floating)."""
    if not isinstance(t, datetime):
        return t.isoformat()
    if t.tzinfo is not None:
        t = t.astimezone(ZoneInfo(tz)) if tz else t.astimezone()
    return t.replace(tzinfo=None).isoformat(timespec="seconds")


def _unwall(text: str, tz: str | None) -> datetime:
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), time())
    t = datetime.fromisoformat(text)
    return t.replace(tzinfo=ZoneInfo(tz)) if tz else t


def _row(
    title: str,
    start,
    end,
    tz: str | None,
    location: str = "",
    description: str = "",
    rrule: str | None = None,
    exdates=(),
    uid: str = "",
) -> dict:
    return {
        "uid": uid or f"{uuid.uuid4()}@anima",
        "title": title,
        "start": _wall(start, tz),
        "end": _wall(end, tz),
        "tz": tz,
        "location": location,
        "description": description,
        "rrule": rrule,
        "exdates": [_wall(x, tz) for x in exdates],
    }


def _check_rrule(rrule: str, start: datetime) -> None:
    rrulestr(rrule, dtstart=start)  # ValueError when it is not a rule dateutil can follow


# --- .ics in and out -----------------------------------------------------------------------------


def _event_row(event, where: str) -> dict:
    """One VEVENT as a row; BadInput naming the event and the problem when it is broken."""
    from icalendar.error import InvalidCalendar

    name = f"{where}: event '{event.get('SUMMARY', '?')}'"
    if event.errors:
        prop, problem = event.errors[0]
        raise BadInput(f"{name} has a bad {prop}: {problem}", "fix or remove that line; nothing was imported")
    try:
        start, end = event.start, event.end
    except (InvalidCalendar, ValueError) as exc:
        raise BadInput(f"{name}: {exc}", "every event needs a valid DTSTART; nothing was imported") from exc
    tz = _zone_of(start) if isinstance(start, datetime) else None
    if isinstance(start, datetime) and start.tzinfo is not None and tz is None:  # a zone without an IANA name
        start, end, tz = start.astimezone(ZoneInfo("UTC")), end.astimezone(ZoneInfo("UTC")), "UTC"
    if type(end) is not type(start):  # a whole-day start with a timed end, or the reverse
        end = start + (timedelta(days=1) if not isinstance(start, datetime) else timedelta(hours=1))
    try:
        end = max(end, start)  # an end before the start: a moment
    except TypeError:  # one time with a zone, one without
        end = start + timedelta(hours=1)
    rrule = None
    if event.get("RRULE"):
        recur = event.get("RRULE")
        recur = recur[0] if isinstance(recur, list) else recur
        rrule = _rrule_text(recur, start, tz)
        try:
            _check_rrule(rrule, _unwall(_wall(start, tz), tz))
        except ValueError as exc:
            raise BadInput(
                f"{name} has a bad RRULE '{rrule}': {exc}", "fix or remove that line; nothing was imported"
            ) from exc
    uid = (
        str(event.get("UID") or "")
        or hashlib.sha1(f"{event.get('SUMMARY')}|{_wall(start, tz)}".encode()).hexdigest() + "@anima"
    )
    return _row(
        str(event.get("SUMMARY") or "(no title)"),
        start,
        end=end,
        tz=tz,
        location=str(event.get("LOCATION") or ""),
        description=str(event.get("DESCRIPTION") or ""),
        rrule=rrule,
        exdates=event.exdates,
        uid=uid,
    )


def _rrule_text(recur, start, tz: str | None) -> str:
    """The RRULE with UNTIL in the form dateutil wants: UTC for zoned events, local wall time otherwise."""
    recur = recur.copy()
    if "UNTIL" in recur:
        until = recur["UNTIL"][0]
        if tz:
            until = until if isinstance(until, datetime) else datetime.combine(until, time(23, 59, 59))
            until = until.replace(tzinfo=until.tzinfo or ZoneInfo(tz)).astimezone(ZoneInfo("UTC"))
        elif isinstance(until, datetime) and until.tzinfo:
            until = until.astimezone().replace(tzinfo=None)
        elif not isinstance(until, datetime) and isinstance(start, datetime):
            until = datetime.combine(until, time(23, 59, 59))
        recur["UNTIL"] = [until]
    return recur.to_ical().decode()


def import_ics(store, path: str | Path) -> int:
    """Read the events of an .ics file; returns how many. The same UID again replaces
    the event, so importing a file twice changes nothing. A broken file imports nothing."""
    from icalendar import Calendar

    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror}", "check the path") from exc
    try:
        calendars = Calendar.from_ical(data, multiple=True)
    except ValueError as exc:
        raise BadInput(
            f"{path.name} is not a valid .ics file: {exc}", "export the calendar again as iCalendar (.ics)"
        ) from exc
    except OSError as exc:  # a TZID too long to be looked up as a zone file
        raise BadInput(
            f"{path.name} is not a valid .ics file: a TZID names no time zone ({exc.strerror})",
            "export the calendar again as iCalendar (.ics)",
        ) from exc
    if not calendars:
        raise BadInput(
            f"{path.name} is not a valid .ics file: no complete BEGIN:VCALENDAR ... END:VCALENDAR",
            "export the calendar again as iCalendar (.ics)",
        )
    rows: dict[str, dict] = {}
    moved = []  # (master uid, the occurrence it replaces) for RECURRENCE-ID events
    for event in (e for cal in calendars for e in cal.walk("VEVENT")):
        row = _event_row(event, path.name)
        if event.get("RECURRENCE-ID"):
            rid = event.decoded("RECURRENCE-ID")
            moved.append((row["uid"], rid))
            row["uid"] += "/" + _wall(rid, "UTC")
        rows[row["uid"]] = row
    for uid, rid in moved:
        if master := rows.get(uid):
            master["exdates"].append(_wall(rid, master["tz"]))
    store.calendar.upsert(list(rows.values()))
    return len(rows)


def export_ics(store, path: str | Path) -> int:
    """Write every event to an .ics file (repeating ones as their rule); returns how many."""
    from icalendar import Calendar, Event, vRecur

    cal = Calendar()
    cal.add("prodid", "-//anima//calendar//EN")
    cal.add("version", "2.0")
    rows = store.calendar.all()
    for r in rows:
        e = Event()
        whole_day = len(r["start"]) == 10
        e.add("uid", r["uid"])
        e.add("summary", r["title"])
        e.add("dtstart", date.fromisoformat(r["start"]) if whole_day else _unwall(r["start"], r["tz"]))
        e.add("dtend", date.fromisoformat(r["end"]) if whole_day else _unwall(r["end"], r["tz"]))
        if r["location"]:
            e.add("location", r["location"])
        if r["description"]:
            e.add("description", r["description"])
        if r["rrule"]:
            e.add("rrule", vRecur.from_ical(r["rrule"]))
        for x in r["exdates"]:
            e.add("exdate", date.fromisoformat(x) if len(x) == 10 else _unwall(x, r["tz"]))
        cal.add_component(e)
    cal.add_missing_timezones()  # VTIMEZONE blocks, for clients without the tz database
    path = Path(path).expanduser()
    try:
        path.write_bytes(cal.to_ical())
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror}", "check that the folder exists and is writable") from exc
    return len(rows)


# --- adding and asking ---------------------------------------------------------------------------


def add_event(
    store,
    title: str,
    start: date | datetime,
    end: date | datetime | None = None,
    location: str = "",
    description: str = "",
    rrule: str | None = None,
) -> dict:
    """A date is a whole-day event; a time without a zone is local. `end` defaults to an
    hour (a day) later; `rrule` is an RRULE value such as 'FREQ=WEEKLY;COUNT=10'."""
    if not title.strip():
        raise BadInput("an event needs a title", "say what it is")
    whole_day = not isinstance(start, datetime)
    end = end or start + (timedelta(days=1) if whole_day else timedelta(hours=1))
    if end < start:
        raise BadInput(f"the event ends ({end}) before it starts ({start})", "give a later end")
    tz = _zone_of(start) if not whole_day else None
    if not whole_day and start.tzinfo is not None and tz is None:
        start, end = local(start), local(end)
    if rrule:
        try:
            _check_rrule(rrule, _unwall(_wall(start, tz), tz))
        except ValueError as exc:
            raise BadInput(f"bad repeat rule '{rrule}': {exc}", "e.g. FREQ=WEEKLY;COUNT=10") from exc
    row = _row(title.strip(), start, end=end, tz=tz, location=location, description=description, rrule=rrule)
    store.calendar.upsert([row])
    return {
        "uid": row["uid"],
        "title": row["title"],
        "start": row["start"],
        "end": row["end"],
        "location": location,
        "rrule": rrule,
    }


def _occurrences(r, lo: datetime, hi: datetime):
    """(start, end) of each occurrence of event row `r` overlapping [lo, hi), local naive times."""
    start, end = _unwall(r["start"], r["tz"]), _unwall(r["end"], r["tz"])
    length = end - start
    if r["tz"]:  # compare in the event's own zone, so a weekly 09:30 stays 09:30 across DST
        lo, hi = lo.astimezone(ZoneInfo(r["tz"])), hi.astimezone(ZoneInfo(r["tz"]))
    if r["rrule"]:
        skip = {_unwall(x, r["tz"]) for x in r["exdates"]}
        starts = [s for s in rrulestr(r["rrule"], dtstart=start).between(lo - length, hi, inc=True) if s not in skip]
    else:
        starts = [start]
    for s in starts:
        if s < hi and s + max(length, timedelta(seconds=1)) > lo:
            yield local(s), local(s + length)


def events_between(store, start: datetime, end: datetime) -> list[dict]:
    """Events (repeating ones expanded) overlapping [start, end), soonest first. Each:
    title, start, end, location, description, all_day, uid, recurring."""
    lo, hi = local(start), local(end)
    # A person's calendar is small: rules are expanded in Python. Wall times of other
    # zones are up to a day off local time, so two days either side are read.
    first, last = (lo - timedelta(days=2)).date().isoformat(), (hi + timedelta(days=2)).date().isoformat()
    rows = store.calendar.candidates(first, last)
    found = []
    for r in rows:
        for s, e in _occurrences(r, lo, hi):
            found.append(
                {
                    "title": r["title"],
                    "start": s.isoformat(timespec="minutes"),
                    "end": e.isoformat(timespec="minutes"),
                    "location": r["location"],
                    "description": r["description"],
                    "all_day": len(r["start"]) == 10,
                    "uid": r["uid"],
                    "recurring": bool(r["rrule"]),
                }
            )
    return sorted(found, key=lambda x: (x["start"], x["title"]))


def resolve_span(phrase: str, now: datetime) -> TimeSpan:
    """The time a question is about: "Thursday", "tomorrow", "next week", "2026-05-14"."""
    span = query_range(phrase, local(now))
    if span is None:
        raise BadInput(
            f"cannot tell which day '{phrase}' means", "try 'Thursday', 'tomorrow', 'next week' or 2026-05-14"
        )
    return span


def whats_on(store, phrase: str, now: datetime) -> list[dict]:
    """Events during the time the phrase names, resolved against `now` (see events_between)."""
    span = resolve_span(phrase, now)
    return events_between(store, span.start, span.end)


def describe(event: dict) -> str:
    """'2026-05-14 09:30-10:00 Standup (Room 1)', '2026-12-25 all day Holiday',
    '2026-01-16 to 2026-01-18 all day Trip', '2026-05-14 22:00 to 2026-05-15 02:00 Party'."""
    start, end = datetime.fromisoformat(event["start"]), datetime.fromisoformat(event["end"])
    if event["all_day"]:
        last = max((end - timedelta(days=1)).date(), start.date())
        when = f"{start:%Y-%m-%d}" + (f" to {last}" if last > start.date() else "") + " all day"
    else:
        when = f"{start:%Y-%m-%d %H:%M}" + (
            f"-{end:%H:%M}" if end.date() == start.date() else f" to {end:%Y-%m-%d %H:%M}"
        )
    return f"{when} {event['title']}" + (f" ({event['location']})" if event["location"] else "")


# --- for the model ---------------------------------------------------------------------------


def tools(ctx: ToolContext) -> list[Tool]:
    store = ctx.store

    def calendar_on(when: Annotated[str, Arg("e.g. 'Thursday', 'tomorrow', 'next week'")]) -> str:
        """What is in the user's calendar on a day or in a period."""
        span = resolve_span(when, ctx.now())
        events = events_between(store, span.start, span.end)
        days = span.start.date().isoformat() + (
            "" if span.end - span.start <= timedelta(days=1) else f" to {(span.end - timedelta(seconds=1)).date()}"
        )
        return "\n".join(describe(e) for e in events) or f"nothing in the calendar for {when} ({days})"

    def calendar_add(
        title: str,
        when: Annotated[str, Arg("e.g. 'Thursday at 3pm', 'tomorrow', '2026-05-14 09:30'")],
        minutes: Annotated[int, Arg("how long; default 60")] = 60,
        location: str = "",
        repeat: Annotated[str, Arg(enum=("", *REPEATS))] = "",
    ) -> str:
        """Put an event in the user's calendar."""
        spans = find_times(when, local(ctx.now()))
        if (
            not spans
            or spans[0].granularity not in ("day", "hour", "minute")
            or (spans[0].granularity == "day" and spans[0].end - spans[0].start != timedelta(days=1))
        ):
            raise BadInput(
                f"cannot tell when '{when}' is",
                "give one day and maybe a time, e.g. 'Thursday at 3pm' or '2026-05-14 09:30'",
            )
        span = spans[0]
        if minutes <= 0:
            raise BadInput("minutes must be more than 0", "e.g. 60")
        if span.granularity == "day":
            event = add_event(store, title, span.start.date(), location=location, rrule=REPEATS.get(repeat))
        else:
            event = add_event(
                store, title, span.start, span.start + timedelta(minutes=minutes), location, rrule=REPEATS.get(repeat)
            )
        return "added " + describe({**event, "all_day": span.granularity == "day"})

    return [
        tool(
            calendar_on,
            triggers=r"\bcalendar\b|\bschedule\b|what'?s on\b|\bmeetings?\b|\bappointments?\b|\bbusy\b|\bfree\b|"
            r"\bmy (?:week|day|weekend)\b",
        ),
        tool(
            calendar_add,
            side_effects=True,
            triggers=r"\bcalendar\b|\bschedule\b|\bmeeting\b|\bappointment\b|\bevent\b",
        ),
    ]
