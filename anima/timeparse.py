"""Time expressions in English text, resolved against a reference time `now`.

"I'm flying to Lisbon next Friday" said on Monday 2023-05-08 -> 2023-05-12; "what did I do
last May?" -> May 2022. Pure functions, stdlib only, case-insensitive. Every expression is a
TimeSpan [start, end) with the phrase as written (leading "on/in/at/during" included) and a
granularity. Examples for now = Wednesday 2023-05-10 14:30:

    phrase                                     resolves to                                granularity
    today, tomorrow, yesterday                 05-10, 05-11, 05-09 (the whole day)        day
    the day before yesterday / after tomorrow  05-08 / 05-12                              day
    this morning / afternoon / evening         05-10 06-12h / 12-18h / 18-24h             hour
    tonight, last night, tomorrow morning      05-10 18-24h, 05-09 18-24h, 05-11 06-12h   hour
    Friday, on Friday, next Friday             05-12: the next one after today (+1..+7)   day
    last Friday                                05-05: the latest one before today (-1..-7) day
    this Friday, this Monday                   05-12, 05-08: in the current Mon-Sun week  day
    this / next / last week                    Mon 05-08 / 05-15 / 05-01, 7 days          week
    this / next / last weekend                 Sat+Sun 05-13 / 05-13 / 05-06              day
    this / next / last month, year             calendar month / year                      month, year
    3 days ago, in 2 weeks, a week from now    05-07, 05-24, 05-17 (one day; week = 7 d)  day
    a month ago, in 2 years                    April 2023, 2025 (whole month / year)      month, year
    in 2 hours, 10 minutes ago                 16:30-17:30, 14:20-14:21                   hour, minute
    a few days ago, a couple of days ago       days 05-07 and 05-08 (few = couple = 2-3)  day
    the past 3 days, past week, the last month 05-07 00:00 .. now (rolling window)        day
    in May, during May                         2023-05 (this year's May unless after now)  month
    last May / next May / this May             2022-05 / 2024-05 / 2023-05                month
    May 2023, in Jan 2022                      that month                                 month
    8 May 2023, May 8th, 2023, Friday, May 12  that day                                   day
    May 8, on the 8th of May (no year)         the one closest to now (2023-05-08)        day
    2023-05-08, 5/8/2023 (US m/d/y)            that day; ISO with T13:56 -> that minute   day, minute
    in 2022, of 2022, year 2022, "2022" alone  the year                                   year
    since 2020, since May, since last week     the span's start .. now                    as the span
    at 9pm, 9:30 am, at 21:00, at noon         the next such time after now               hour, minute
    at midnight                                00:00 ending the day (bare: tonight's)     hour
    tomorrow at 9, at 9 on Friday, tonight at 8, 1:56 pm on 8 May, 2023   that time      hour, minute

Choices for ambiguous phrases:
- "at 9" (no am/pm, no day): the first of 09:00 / 21:00 still ahead today, else tomorrow's, read as below.
  With a day ("tomorrow at 9") 1-6 mean pm and 7-12 am/noon; "today at 3" prefers the one
  still ahead; a part of day sets am/pm ("tonight at 8" = 20:00, "at 9 in the morning").
  Minutes given -> granularity minute, else hour; the span lasts one unit. "09:00", "21:00" are 24-hour.
- Weekdays are forward-looking: bare "Friday" = "next Friday" = the next one after today, even
  if this week's is 2 days away. find_times does no tense detection; query_range does: in a
  past-tense question (did/was/were/went/had/happened) a bare weekday is the latest past one.
- "every Monday": recurrence is not parsed here (`anima.recurrence` does); the "Monday" inside it \
resolves like a bare weekday.
- "in May" = this year's May if it has begun, else last year's (past-biased, even for "I will ... in
  December"); "last May" = the latest May strictly before the current month; "next May" = the first
  May strictly after it. "this may" must be written "May" (capital M) to count: "this may take long".
- A day without a year ("May 8") is the occurrence closest to now (Dec 31 + "Jan 2" = next year).
  "3 May" needs "on", "the", an ordinal or a year to count ("3 may be enough" is not a date).
- 4-digit years (1900-2100) count only after in/during/of/year/since, after a month, in a full date,
  or as the whole text. "May", "March" etc. alone are never months: they need in/during/last/next/this/
  since, a day or a year ("May I ask", "March on" are not dates).
Limits: English only; no tense detection outside query_range; "in 2000 ways" reads as a year;
no seasons, "end of May", "since 9am" (clock times are always ahead), ranges ("from May to June"),
time zones, or two-digit years.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta


@dataclass(frozen=True)
class TimeSpan:
    start: datetime  # inclusive
    end: datetime  # exclusive
    text: str  # the matched phrase as it appears in the input
    granularity: str  # "minute" | "hour" | "day" | "week" | "month" | "year"


_WEEKDAYS = {name: i for i, name in enumerate("monday tuesday wednesday thursday friday saturday sunday".split())}
_MONTHS = {
    name: i
    for i, name in enumerate(
        "january february march april may june july august september october november december".split(), 1
    )
}
_MONTH_ABBR = {**_MONTHS, **{name[:3]: i for name, i in _MONTHS.items()}, "sept": 9}
_NUMBERS = {w: i for i, w in enumerate("one two three four five six seven eight nine ten eleven twelve".split(), 1)} | {
    "a": 1,
    "an": 1,
}
_PARTS = {"morning": (6, 12), "afternoon": (12, 18), "evening": (18, 24), "night": (18, 24)}
_UNIT_GRAN = {"minute": "minute", "hour": "hour", "day": "day", "week": "day", "month": "month", "year": "year"}
_ORDER = ["minute", "hour", "day", "week", "month", "year"]
_STEP = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


def _alt(words) -> str:
    return "|".join(sorted(words, key=len, reverse=True))


_WD = _alt(_WEEKDAYS)
_MON = rf"(?P<mon>{_alt(_MONTH_ABBR)})\b\.?"
_YEAR = r"(?:19\d\d|20\d\d|2100)"
_NUM = rf"(?P<n>\d{{1,3}}|{_alt(_NUMBERS)}|(?:a\s+)?couple(?:\s+of)?|(?:a\s+)?few)"
_UNIT = r"(?P<unit>minute|hour|day|week|month|year)s?\b"
_CLOCK_FOLLOWERS = "tomorrow|today|tonight|on|this|next|every|the|and|or|then|for|with|to|until|till|in|sharp"

_RELATIVE_DAY = re.compile(
    r"\b(?:(?:the\s+)?day\s+(?P<dir>before|after)\s+(?P<base>yesterday|tomorrow)|(?P<word>today|tomorrow|yesterday))\b",
    re.I,
)
_PART_OF_DAY = re.compile(
    r"\b(?:(?P<day>this|today|tomorrow|yesterday|last)\s+(?P<part>morning|afternoon|evening|night)|(?P<tonight>tonight))\b",
    re.I,
)
_WEEKDAY = re.compile(rf"\b(?:(?P<mod>last|next|this(?:\s+coming)?|coming|on)\s+)?(?P<wd>{_WD})\b", re.I)
_CALENDAR = re.compile(r"\b(?P<mod>last|next|this|coming)\s+(?P<unit>week|month|year|weekend)\b", re.I)
_WINDOW = re.compile(rf"\b(?P<pre>the\s+(?:past|last)|past|last)\s+(?:{_NUM}\s+)?{_UNIT}", re.I)
_OFFSET = re.compile(rf"\b(?:(?P<in>in)\s+)?{_NUM}\s+{_UNIT}(?:\s+(?P<dir>ago|from\s+now))?", re.I)
_DAY_MONTH = re.compile(
    rf"\b(?P<lead>on\s+)?(?:(?:{_WD}),?\s+)?(?P<the>the\s+)?(?P<d>\d{{1,2}})(?P<ord>st|nd|rd|th)?\s+(?P<of>of\s+)?{_MON}(?:,?\s+(?P<y>{_YEAR})\b)?",
    re.I,
)
_MONTH_DAY = re.compile(
    rf"\b(?:on\s+)?(?:(?:{_WD}),?\s+)?{_MON}\s+(?:the\s+)?(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(?P<y>{_YEAR})\b)?",
    re.I,
)
_MONTH_YEAR = re.compile(rf"\b(?:(?:in|during)\s+)?{_MON},?\s+(?P<y>{_YEAR})\b", re.I)
_BARE_MONTH = re.compile(rf"\b(?:(?P<mod>in|during|last|next|this)\s+|(?<=since\s))(?P<mon>{_alt(_MONTHS)})\b", re.I)
_YEAR_ONLY = re.compile(
    rf"\b(?:(?:in|during|of|year)\s+|(?<=since\s))(?P<y>{_YEAR})\b|\A\s*(?P<y2>{_YEAR})\s*[.?!]?\s*\Z", re.I
)
_ISO = re.compile(
    r"\b(?:on\s+)?(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)(?:[T ](?P<H>\d\d):(?P<M>\d\d)(?::\d\d(?:\.\d+)?)?)?\b", re.I
)
_US_DATE = re.compile(r"\b(?:on\s+)?(?P<mo>\d{1,2})/(?P<d>\d{1,2})/(?P<y>\d{4})\b", re.I)
_CLOCK = re.compile(
    r"(?:\bat\s+)?\b(?P<h>\d{1,2})(?:[:.](?P<m>[0-5]\d))?\s*(?P<ampm>[ap])(?:\.m\.|\.?m\b)"
    r"|\bat\s+(?P<h2>\d{1,2})(?::(?P<m2>[0-5]\d))?(?:\s*o'?clock)?"
    r"(?:\s+(?:in\s+the\s+(?P<part>morning|afternoon|evening)|at\s+(?P<night>night)))?"
    rf"(?=\s*(?:[^\w\s:]|\Z|(?:{_CLOCK_FOLLOWERS})\b))"
    r"|(?:\bat\s+)?\b(?P<word>noon|midnight)\b",
    re.I,
)
_GAP = re.compile(r"\s*,?\s*")  # what may separate a day and a clock time that belong together
_SINCE = re.compile(r"\bsince\s+\Z", re.I)
_PAST_TENSE = re.compile(r"\b(?:did|was|were|went|had|happened|ago)\b", re.I)
_SESSION = re.compile(
    rf"\s*(?P<h>\d{{1,2}}):(?P<mi>\d\d)\s*(?P<ampm>[ap])\.?m\.?\s+on\s+(?P<d>\d{{1,2}})\s+{_MON},?\s+(?P<y>\d{{4}})\s*",
    re.I,
)
_ISO_TEXT = re.compile(r"\s*\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d{1,6})?)?)?\s*")


# --- calendar arithmetic -------------------------------------------------------------------------


def _midnight(d: date) -> datetime:
    return datetime.combine(d, time())


def _add_months(t: datetime, n: int) -> datetime:
    years, month0 = divmod(t.month - 1 + n, 12)
    year = t.year + years
    return t.replace(year=year, month=month0 + 1, day=min(t.day, calendar.monthrange(year, month0 + 1)[1]))


def _shift(t: datetime, n: int, unit: str) -> datetime:
    if unit in ("month", "year"):
        return _add_months(t, n * (12 if unit == "year" else 1))
    return t + timedelta(**{unit + "s": n})


def _unit_span(t: datetime, gran: str) -> tuple[datetime, datetime]:
    """The `gran`-sized span holding t (minute/hour spans start at t's minute)."""
    if gran in _STEP:
        start = t.replace(second=0, microsecond=0) if gran != "day" else _midnight(t.date())
        return start, start + _STEP[gran]
    if gran == "week":
        start = _midnight(t.date() - timedelta(days=t.weekday()))
        return start, start + timedelta(days=7)
    start = datetime(t.year, t.month if gran == "month" else 1, 1)
    return start, _add_months(start, 1 if gran == "month" else 12)


def _day_span(d: date, m: re.Match) -> TimeSpan:
    return TimeSpan(_midnight(d), _midnight(d) + _STEP["day"], m.group(0), "day")


def _month_span(year: int, month: int, m: re.Match) -> TimeSpan:
    return TimeSpan(*_unit_span(datetime(year, month, 1), "month"), m.group(0), "month")


def _count(word: str) -> int | None:
    """1 for "a"/"an", the value of a digit string or number word; None for few / couple."""
    word = word.lower()
    return int(word) if word.isdigit() else _NUMBERS.get(word)


# --- one handler per pattern: (match, now, past-tense question?) -> TimeSpan | None --------------


def _on_relative_day(m: re.Match, now: datetime, past: bool) -> TimeSpan:
    if m["word"]:
        n = {"today": 0, "tomorrow": 1, "yesterday": -1}[m["word"].lower()]
    else:
        n = (1 if m["base"].lower() == "tomorrow" else -1) + (1 if m["dir"].lower() == "after" else -1)
    return _day_span(now.date() + timedelta(days=n), m)


def _on_part_of_day(m: re.Match, now: datetime, past: bool) -> TimeSpan | None:
    word, part = ("this", "night") if m["tonight"] else (m["day"].lower(), m["part"].lower())
    if word == "last" and part not in ("evening", "night"):
        return None
    day = _midnight(now.date()) + timedelta(days={"yesterday": -1, "last": -1, "tomorrow": 1}.get(word, 0))
    first, last = _PARTS[part]
    return TimeSpan(day + timedelta(hours=first), day + timedelta(hours=last), m.group(0), "hour")


def _on_weekday(m: re.Match, now: datetime, past: bool) -> TimeSpan:
    mod, wd, today = " ".join((m["mod"] or "").lower().split()), _WEEKDAYS[m["wd"].lower()], now.date()
    if mod == "this":
        return _day_span(today + timedelta(days=wd - today.weekday()), m)
    if mod == "last" or (past and mod in ("", "on")):
        return _day_span(today - timedelta(days=(today.weekday() - wd) % 7 or 7), m)
    return _day_span(today + timedelta(days=(wd - today.weekday()) % 7 or 7), m)


def _on_calendar(m: re.Match, now: datetime, past: bool) -> TimeSpan:
    step = {"last": -1, "this": 0}.get(m["mod"].lower(), 1)
    unit = m["unit"].lower()
    if unit == "weekend":  # next weekend = the coming one; on Sat/Sun that is next week's
        saturday = _midnight(now.date()) + timedelta(days=5 - now.weekday())
        saturday += timedelta(days=-7 if step < 0 else 7 if step > 0 and now.weekday() >= 5 else 0)
        return TimeSpan(saturday, saturday + timedelta(days=2), m.group(0), "day")
    return TimeSpan(*_unit_span(_shift(now, step, unit), unit), m.group(0), unit)


def _on_window(m: re.Match, now: datetime, past: bool) -> TimeSpan | None:
    unit = m["unit"].lower()
    if not m["n"] and (m["pre"].lower() == "last" or unit in ("minute", "hour", "day")):
        return None  # "last week" is the calendar week; "the last minute" is an idiom
    n = _count(m["n"]) if m["n"] else 1
    start = _shift(now, -(3 if n is None else n), unit)
    start = start.replace(second=0, microsecond=0) if unit in ("minute", "hour") else _midnight(start.date())
    return TimeSpan(start, now, m.group(0), unit if unit in ("minute", "hour") else "day")


def _on_offset(m: re.Match, now: datetime, past: bool) -> TimeSpan | None:
    ago = bool(m["dir"]) and m["dir"].lower() == "ago"
    if (not m["in"] and not m["dir"]) or (m["in"] and ago):
        return None
    unit, n = m["unit"].lower(), _count(m["n"])
    sign, gran = -1 if ago else 1, _UNIT_GRAN[unit]
    near, far = (_unit_span(_shift(now, sign * k, unit), gran) for k in ((2, 3) if n is None else (n, n)))
    return TimeSpan(min(near[0], far[0]), max(near[1], far[1]), m.group(0), gran)


def _on_day_month(m: re.Match, now: datetime, past: bool) -> TimeSpan | None:
    g = m.groupdict()
    month, day = _MONTH_ABBR[g["mon"].lower()], int(g["d"])
    if (
        m.re is _DAY_MONTH
        and g["mon"].lower() == "may"
        and not (g["y"] or g["lead"] or g["the"] or g["ord"] or g["of"])
    ):
        return None  # "3 may be enough"
    if g["y"]:
        return _day_span(date(int(g["y"]), month, day), m)
    options = []
    for year in range(now.year - 4, now.year + 5):  # Feb 29 may be years away
        try:
            options.append(date(year, month, day))
        except ValueError:
            pass
    return _day_span(min(options, key=lambda d: abs(d - now.date())), m)  # min([]) -> ValueError: no match


def _on_month_year(m: re.Match, now: datetime, past: bool) -> TimeSpan:
    return _month_span(int(m["y"]), _MONTH_ABBR[m["mon"].lower()], m)


def _on_bare_month(m: re.Match, now: datetime, past: bool) -> TimeSpan | None:
    mod, month, year = (m["mod"] or "since").lower(), _MONTHS[m["mon"].lower()], now.year
    if mod == "this" and m["mon"].lower() == "may" and not m["mon"].startswith("M"):
        return None  # "this may take a while"
    if mod == "last":
        year -= month >= now.month
    elif mod == "next":
        year += month <= now.month
    elif mod != "this":  # in, during, since
        year -= month > now.month
    return _month_span(year, month, m)


def _on_year(m: re.Match, now: datetime, past: bool) -> TimeSpan:
    start = datetime(int(m["y"] or m["y2"]), 1, 1)
    return TimeSpan(start, start.replace(year=start.year + 1), m.group(0), "year")


def _on_numeric_date(m: re.Match, now: datetime, past: bool) -> TimeSpan:
    g = m.groupdict()  # ISO 2023-05-08[T13:56[:00]] or US 5/8/2023
    day = date(int(g["y"]), int(g["mo"]), int(g["d"]))
    if g.get("H") is None:
        return _day_span(day, m)
    start = datetime.combine(day, time(int(g["H"]), int(g["M"])))
    return TimeSpan(start, start + _STEP["minute"], m.group(0), "minute")


def _clock_of(m: re.Match) -> tuple[int, int, str | None, str]:
    """(hour, minute, "a" | "p" | "24" | None when ambiguous, granularity) of a _CLOCK match."""
    if m["word"]:
        return (12, 0, "p", "hour") if m["word"].lower() == "noon" else (24, 0, "24", "hour")
    digits, minutes = m["h"] or m["h2"], m["m"] or m["m2"]
    hour, mer = int(digits), (m["ampm"] or "").lower() or None
    if (mer and not 1 <= hour <= 12) or hour > 23:
        raise ValueError(f"no such hour: {m.group(0)}")
    if not mer and (hour == 0 or hour > 12 or digits.startswith("0")):
        mer = "24"
    elif not mer and (m["part"] or m["night"]):
        mer = "a" if (m["part"] or "").lower() == "morning" else "p"
    return hour, int(minutes or 0), mer, "minute" if minutes else "hour"


def _clock_at(clock: tuple, now: datetime, day: date | None = None, hint: str | None = None) -> datetime:
    """When a clock time happens: on `day`, or (day None) the next such time after now."""
    hour, minute, mer, _ = clock
    mer, today = mer or hint, now.date()

    def at(d: date, h: int) -> datetime:
        return _midnight(d) + timedelta(hours=h, minutes=minute)

    if mer == "p" and hour < 12:
        hour += 12
    elif mer == "a" and hour == 12:
        hour = 0
    elif mer is None:
        if day in (None, today):
            ahead = [h for h in (hour % 12, hour % 12 + 12) if at(today, h) > now]
            if ahead:
                return at(today, ahead[0])
        hour += 12 if hour <= 6 else 0
    if day is None:
        return at(today, hour) if at(today, hour) > now else at(today + timedelta(days=1), hour)
    return at(day, hour)


def _on_clock(m: re.Match, now: datetime, past: bool) -> TimeSpan:
    clock = _clock_of(m)
    start = _clock_at(clock, now)
    return TimeSpan(start, start + _STEP[clock[3]], m.group(0), clock[3])


_RULES = [
    (_ISO, _on_numeric_date),
    (_US_DATE, _on_numeric_date),
    (_DAY_MONTH, _on_day_month),
    (_MONTH_DAY, _on_day_month),
    (_MONTH_YEAR, _on_month_year),
    (_BARE_MONTH, _on_bare_month),
    (_YEAR_ONLY, _on_year),
    (_RELATIVE_DAY, _on_relative_day),
    (_PART_OF_DAY, _on_part_of_day),
    (_WEEKDAY, _on_weekday),
    (_CALENDAR, _on_calendar),
    (_WINDOW, _on_window),
    (_OFFSET, _on_offset),
    (_CLOCK, _on_clock),
]


# --- scanning: all matches, longest first, then "day + clock" merged and "since" extended ---------

_Hit = tuple  # (start index, end index, TimeSpan, the re.Match or None once merged)


def _combine(a: _Hit, b: _Hit, text: str, now: datetime) -> _Hit | None:
    """One hit for a clock time next to a single day or part of day ("tomorrow at 9")."""
    is_clock = [h[3] is not None and h[3].re is _CLOCK for h in (a, b)]
    if is_clock.count(True) != 1 or a[3] is None or b[3] is None or not _GAP.fullmatch(text[a[1] : b[0]]):
        return None
    clock, other = (a, b) if is_clock[0] else (b, a)
    span = other[2]
    if other[3].re is _PART_OF_DAY:
        hint = "a" if span.start.hour < 12 else "p"
    elif span.granularity == "day" and span.end - span.start == _STEP["day"]:
        hint = None
    else:
        return None
    time_of_day = _clock_of(clock[3])
    start, gran = _clock_at(time_of_day, now, span.start.date(), hint), time_of_day[3]
    return a[0], b[1], TimeSpan(start, start + _STEP[gran], text[a[0] : b[1]], gran), None


def _scan(text: str, now: datetime, past: bool = False) -> list[_Hit]:
    now = now.replace(tzinfo=None)  # wall-clock arithmetic: an aware `now` counts in its own zone's time
    hits = []
    for rx, handler in _RULES:
        for m in rx.finditer(text):
            try:
                span = handler(m, now, past)
            except (ValueError, OverflowError):  # February 30th, year 10000, hour 25
                span = None
            if span is not None:
                hits.append((m.start(), m.end(), span, m))
    chosen: list[_Hit] = []
    for hit in sorted(hits, key=lambda h: (h[0] - h[1], h[0])):  # longest first, then leftmost
        if all(hit[1] <= c[0] or hit[0] >= c[1] for c in chosen):
            chosen.append(hit)
    merged: list[_Hit] = []
    for hit in sorted(chosen, key=lambda h: h[0]):
        if merged and (combo := _combine(merged[-1], hit, text, now)):
            merged[-1] = combo
        else:
            merged.append(hit)
    result = []
    for start, end, span, m in merged:
        since = _SINCE.search(text, 0, start)
        if since and span.start < now:
            start, span = since.start(), TimeSpan(span.start, now, text[since.start() : end], span.granularity)
        result.append((start, end, span, m))
    return result


# --- public API ---------------------------------------------------------------------------------


def find_times(text: str, now: datetime) -> list[TimeSpan]:
    (
        """Every time expression found in text, resolved against `now`, in order of appearance """
        """(non-overlapping, longest match wins)."""
    )
    return [hit[2] for hit in _scan(text, now)]


def resolve_date(phrase: str, now: datetime) -> date | None:
    """The single day a phrase refers to ("next Friday" -> that Friday), or None.

    The first expression in the phrase counts; None when it spans more than one calendar day
    ("next week", "a few days ago", "this weekend") or there is none."""
    spans = find_times(phrase, now)
    if not spans:
        return None
    day = spans[0].start.date()
    return day if spans[0].end <= _midnight(day) + _STEP["day"] else None


def query_range(text: str, now: datetime) -> TimeSpan | None:
    (
        """For a question: the span it asks about ("last May", "in 2022", "yesterday", "last week"), or None; """
        """merges several spans into their hull.

    A past-tense question makes a bare weekday the latest past one ("what did I do on Friday?").
    The hull's text runs from the first phrase to the last; its granularity is the coarsest."""
    )
    hits = _scan(text, now, past=bool(_PAST_TENSE.search(text)))
    if len(hits) <= 1:
        return hits[0][2] if hits else None
    spans = [hit[2] for hit in hits]
    return TimeSpan(
        min(s.start for s in spans),
        max(s.end for s in spans),
        text[hits[0][0] : hits[-1][1]],
        max((s.granularity for s in spans), key=_ORDER.index),
    )


def parse_session_time(text: str) -> datetime:
    (
        """Timestamps like LoCoMo's '1:56 pm on 8 May, 2023', '10:37 am on 27 June, 2023', """
        """also ISO '2023-05-08T13:56:00' and '2023-05-08'. Raise ValueError on anything else.

    ISO means a naive date or date-time (no time zone); the result is naive."""
    )
    if m := _SESSION.fullmatch(text):
        hour = int(m["h"])
        if not 1 <= hour <= 12:
            raise ValueError(f"no such hour in {text!r}")
        hour = hour % 12 + (12 if m["ampm"].lower() == "p" else 0)
        return datetime(int(m["y"]), _MONTH_ABBR[m["mon"].lower()], int(m["d"]), hour, int(m["mi"]))
    if _ISO_TEXT.fullmatch(text):
        return datetime.fromisoformat(text.strip())
    raise ValueError(f"not a session timestamp: {text!r}")


def clock_time(text: str) -> time | None:
    """The time of day when the whole text is a clock time ("at 9", "5:30pm", "noon", "at 21:00"),
    read as when said with a day (so "at 9" is 09:00, "at 3" 15:00); else None. For times that recur."""
    m = _CLOCK.fullmatch(text.strip())
    if m is None:
        return None
    try:
        clock = _clock_of(m)
    except ValueError:
        return None
    return _clock_at(clock, datetime(2000, 1, 1), date(2000, 1, 2)).time()
