"""Times that repeat: "every Monday at 9", "every day at 8", "every weekday", "every 2 weeks".

    parse_rule(text) -> Rule | None     None when the text does not start with every/daily/...
    rule.first(now) -> datetime         the first occurrence after now
    rule.after(t) -> datetime           the occurrence after the occurrence t

Forms (case-insensitive), each optionally followed by a clock time ("at 9", "5pm", "noon"):

    every day, daily, every 3 days              every weekday (Mon-Fri), every weekend (Sat, Sun)
    every Monday, every Mon and Thu             every week, weekly, every other week, every 2 weeks
    every 2 weeks on Monday                     every month, monthly, every year, yearly, annually
    every hour, hourly, every 4 hours           (no clock time: the same minute, from now on)

Without a clock time, daily and longer rules fire at 09:00. The first occurrence is the soonest
one that fits ("every week" said on a Wednesday afternoon: Thursday 09:00, then every Thursday).
Datetimes are wall-clock times without a zone, like `anima.timeparse`; `localize` attaches one.
Limits: a monthly rule from the 31st moves to the 30th/28th in shorter months and stays there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone

from anima.timeparse import _add_months, clock_time

DEFAULT_AT = time(9, 0)
_WEEKDAYS = {name: i for i, name in enumerate("monday tuesday wednesday thursday friday saturday sunday".split())}
_WD = r"(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*"
_N = {"other": 2, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_ADVERBS = {
    "hourly": "hour",
    "daily": "day",
    "weekly": "week",
    "monthly": "month",
    "yearly": "year",
    "annually": "year",
}
_EVERY = re.compile(
    rf"\s*(?:every\s+(?:(?P<n>\d{{1,3}}|other|two|three|four|five|six)\s+)?(?P<unit>hour|day|week|month|year)s?"
    rf"|every\s+(?P<days>weekday|weekend|{_WD}(?:\s*(?:,|and|&)\s*{_WD})*)s?"
    rf"|(?P<adverb>{'|'.join(_ADVERBS)}))\b(?P<rest>.*)",
    re.I,
)
_ON = re.compile(rf"\s*on\s+(?P<days>{_WD}(?:\s*(?:,|and|&)\s*{_WD})*)\b(?P<rest>.*)", re.I)


def _weekdays(text: str) -> frozenset[int]:
    text = text.lower()
    if text.startswith("weekday"):
        return frozenset(range(5))
    if text.startswith("weekend"):
        return frozenset((5, 6))
    days = set()
    for word in re.findall(r"[a-z]+", text):
        stem = word.rstrip("s") if len(word) > 3 else word  # mondays, tues, thurs
        found = [i for name, i in _WEEKDAYS.items() if name.startswith(stem)]
        if word != "and" and (len(stem) < 3 or not found):
            raise ValueError(f"'{word}' is not a day of the week")
        days.update(found[:1] if word != "and" else [])
    return frozenset(days)


@dataclass(frozen=True)
class Rule:
    unit: str  # hour | day | week | month | year
    n: int = 1
    weekdays: frozenset[int] = frozenset()  # days of the week it fires on (Monday = 0); empty: any
    at: time | None = None  # time of day; None for hourly rules
    text: str = ""

    def first(self, now: datetime) -> datetime:
        if self.unit == "hour":
            return now.replace(second=0, microsecond=0) + timedelta(hours=self.n)
        day = now.date()
        while True:
            t = datetime.combine(day, self.at or DEFAULT_AT)
            if t > now and (not self.weekdays or day.weekday() in self.weekdays):
                return t
            day += timedelta(days=1)

    def after(self, t: datetime) -> datetime:
        if self.unit == "hour":
            return t + timedelta(hours=self.n)
        if self.weekdays and not (self.unit == "week" and self.n > 1):
            day = t.date() + timedelta(days=1)
            while day.weekday() not in self.weekdays:
                day += timedelta(days=1)
            return datetime.combine(day, t.time())
        if self.unit in ("month", "year"):
            return _add_months(t, self.n * (12 if self.unit == "year" else 1))
        return t + timedelta(days=self.n * (7 if self.unit == "week" else 1))

    def next_after(self, t: datetime, now: datetime) -> tuple[datetime, int]:
        """The first occurrence after `now`, counting from the occurrence t; and how many
        occurrences after t were skipped on the way (missed ones)."""
        skipped, t = 0, self.after(t)
        while t <= now:
            t, skipped = self.after(t), skipped + 1
        return t, skipped


def localize(wall: datetime, like: datetime) -> datetime:
    """A wall-clock time in the zone of the aware datetime `like`. A fixed offset that is the
    machine's own (what datetime.now().astimezone() gives) stands for the machine's zone, so
    that 09:00 stays 09:00 across a daylight-saving change."""
    if isinstance(like.tzinfo, timezone) and like.utcoffset() == like.astimezone().utcoffset():
        return wall.astimezone()
    return wall.replace(tzinfo=like.tzinfo)


def parse_rule(text: str) -> Rule | None:
    """The rule in text, or None when it does not say "every ..." (or daily, weekly ...).
    Raises ValueError when it does but the rest cannot be read ("every Monday at 25")."""
    m = _EVERY.fullmatch(text)
    if m is None:
        if re.match(r"\s*every\b", text, re.I):
            raise ValueError(f"cannot read '{text.strip()}' as a repeating time")
        return None
    unit = (m["unit"] or _ADVERBS.get((m["adverb"] or "").lower()) or ("week" if m["days"] else "day")).lower()
    n = int(m["n"]) if m["n"] and m["n"].isdigit() else _N.get((m["n"] or "").lower(), 1)
    if n < 1:
        raise ValueError("a repeating time needs a step of at least 1")
    weekdays = _weekdays(m["days"]) if m["days"] else frozenset()
    if weekdays and m["days"].lower().startswith(("weekday", "weekend")):
        unit = "day"
    rest = m["rest"]
    if (on := _ON.match(rest)) and unit == "week":
        weekdays, rest = _weekdays(on["days"]), on["rest"]
    at = None
    if rest.strip():
        at = clock_time(rest)
        if at is None:
            raise ValueError(f"cannot read '{rest.strip()}' in '{text.strip()}'")
        if unit == "hour":
            raise ValueError("an hourly time cannot also have a time of day")
    return Rule(unit, n, weekdays, at, " ".join(text.split()))
