"""anima.timeparse: time expressions resolved against a fixed `now`.

NOW is Wednesday 2023-05-10 14:30; boundary cases use Sunday 2023-12-31, Monday 2024-01-01
and Wednesday 2024-02-28 (leap year). Expected spans are written as ISO strings:
(start, end) with end exclusive; a bare date means midnight.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from anima.timeparse import TimeSpan, find_times, parse_session_time, query_range, resolve_date

NOW = datetime(2023, 5, 10, 14, 30)  # a Wednesday
NEW_YEARS_EVE = datetime(2023, 12, 31, 23, 0)  # a Sunday
NEW_YEAR = datetime(2024, 1, 1, 0, 30)  # a Monday
LEAP = datetime(2024, 2, 28, 9, 0)  # a Wednesday, the day before Feb 29
ONE_DAY = timedelta(days=1)


def dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


def only(text: str, now: datetime = NOW) -> TimeSpan:
    spans = find_times(text, now)
    assert len(spans) == 1, f"{text!r} -> {spans}"
    return spans[0]


def check(text: str, start: str, end: str, granularity: str, now: datetime = NOW) -> TimeSpan:
    span = only(text, now)
    assert (span.start, span.end, span.granularity) == (dt(start), dt(end), granularity), f"{text!r} -> {span}"
    return span


# --- phrase families, at NOW = Wednesday 2023-05-10 14:30 ------------------------------------------

RELATIVE_DAYS = [
    ("today", "2023-05-10", "2023-05-11"),
    ("tomorrow", "2023-05-11", "2023-05-12"),
    ("yesterday", "2023-05-09", "2023-05-10"),
    ("the day before yesterday", "2023-05-08", "2023-05-09"),
    ("day before yesterday", "2023-05-08", "2023-05-09"),
    ("the day after tomorrow", "2023-05-12", "2023-05-13"),
    ("TOMORROW", "2023-05-11", "2023-05-12"),
]


@pytest.mark.parametrize(("text", "start", "end"), RELATIVE_DAYS)
def test_relative_days(text, start, end):
    assert check(text, start, end, "day").text == text


PARTS_OF_DAY = [
    ("this morning", "2023-05-10T06:00", "2023-05-10T12:00"),
    ("this afternoon", "2023-05-10T12:00", "2023-05-10T18:00"),
    ("this evening", "2023-05-10T18:00", "2023-05-11T00:00"),
    ("tonight", "2023-05-10T18:00", "2023-05-11T00:00"),
    ("last night", "2023-05-09T18:00", "2023-05-10T00:00"),
    ("tomorrow morning", "2023-05-11T06:00", "2023-05-11T12:00"),
    ("yesterday afternoon", "2023-05-09T12:00", "2023-05-09T18:00"),
]


@pytest.mark.parametrize(("text", "start", "end"), PARTS_OF_DAY)
def test_parts_of_day(text, start, end):
    assert check(text, start, end, "hour").text == text


WEEKDAYS = [
    # bare / "on" / "next": the next one after today (+1..+7)
    ("Friday", "2023-05-12"),
    ("on Friday", "2023-05-12"),
    ("next Friday", "2023-05-12"),
    ("coming Friday", "2023-05-12"),
    ("this coming Friday", "2023-05-12"),
    ("Monday", "2023-05-15"),
    ("Tuesday", "2023-05-16"),
    ("Wednesday", "2023-05-17"),  # today excluded
    ("next Wednesday", "2023-05-17"),
    # "last": the latest one before today (-1..-7)
    ("last Friday", "2023-05-05"),
    ("last Tuesday", "2023-05-09"),
    ("last Wednesday", "2023-05-03"),
    ("last Thursday", "2023-05-04"),
    # "this": the one in the current Monday-Sunday week, past or future
    ("this Friday", "2023-05-12"),
    ("this Monday", "2023-05-08"),
    ("this Wednesday", "2023-05-10"),
    ("this Sunday", "2023-05-14"),
    ("on friday", "2023-05-12"),
]


@pytest.mark.parametrize(("text", "day"), WEEKDAYS)
def test_weekdays(text, day):
    span = only(text)
    assert (span.start, span.end - span.start, span.granularity) == (dt(day), ONE_DAY, "day")
    assert span.text == text


@pytest.mark.parametrize(
    ("now", "text", "day"),
    [
        (datetime(2023, 5, 12, 8), "next Friday", "2023-05-19"),  # on a Friday: a week ahead
        (datetime(2023, 5, 12, 8), "Friday", "2023-05-19"),
        (datetime(2023, 5, 12, 8), "last Friday", "2023-05-05"),
        (datetime(2023, 5, 12, 8), "this Friday", "2023-05-12"),
        (datetime(2023, 5, 14, 8), "next Monday", "2023-05-15"),  # Sunday -> tomorrow
        (datetime(2023, 5, 14, 8), "this Monday", "2023-05-08"),
    ],
)
def test_weekdays_from_other_days(now, text, day):
    assert resolve_date(text, now) == date.fromisoformat(day)


def test_every_monday_is_the_next_monday_named_monday():
    span = check("every Monday", "2023-05-15", "2023-05-16", "day")
    assert span.text == "Monday"


CALENDAR_UNITS = [
    ("this week", "2023-05-08", "2023-05-15", "week"),
    ("next week", "2023-05-15", "2023-05-22", "week"),
    ("last week", "2023-05-01", "2023-05-08", "week"),
    ("this weekend", "2023-05-13", "2023-05-15", "day"),
    ("next weekend", "2023-05-13", "2023-05-15", "day"),
    ("last weekend", "2023-05-06", "2023-05-08", "day"),
    ("this month", "2023-05-01", "2023-06-01", "month"),
    ("next month", "2023-06-01", "2023-07-01", "month"),
    ("last month", "2023-04-01", "2023-05-01", "month"),
    ("this year", "2023-01-01", "2024-01-01", "year"),
    ("next year", "2024-01-01", "2025-01-01", "year"),
    ("last year", "2022-01-01", "2023-01-01", "year"),
]


@pytest.mark.parametrize(("text", "start", "end", "granularity"), CALENDAR_UNITS)
def test_calendar_units(text, start, end, granularity):
    assert check(text, start, end, granularity).text == text


@pytest.mark.parametrize(
    ("now", "text", "start", "end"),
    [
        (datetime(2023, 5, 13, 10), "this weekend", "2023-05-13", "2023-05-15"),  # Saturday: the current one
        (datetime(2023, 5, 13, 10), "next weekend", "2023-05-20", "2023-05-22"),
        (datetime(2023, 5, 14, 10), "last weekend", "2023-05-06", "2023-05-08"),  # Sunday: the one before
    ],
)
def test_weekends_seen_from_a_weekend(now, text, start, end):
    check(text, start, end, "day", now)


OFFSETS = [
    ("3 days ago", "2023-05-07", "2023-05-08", "day"),
    ("a day ago", "2023-05-09", "2023-05-10", "day"),
    ("a week ago", "2023-05-03", "2023-05-04", "day"),
    ("two weeks ago", "2023-04-26", "2023-04-27", "day"),
    ("twelve days ago", "2023-04-28", "2023-04-29", "day"),
    ("in 2 days", "2023-05-12", "2023-05-13", "day"),
    ("in 2 weeks", "2023-05-24", "2023-05-25", "day"),
    ("a week from now", "2023-05-17", "2023-05-18", "day"),
    ("a month ago", "2023-04-01", "2023-05-01", "month"),
    ("3 months ago", "2023-02-01", "2023-03-01", "month"),
    ("in 2 months", "2023-07-01", "2023-08-01", "month"),
    ("a year ago", "2022-01-01", "2023-01-01", "year"),
    ("2 years ago", "2021-01-01", "2022-01-01", "year"),
    ("in 2 years", "2025-01-01", "2026-01-01", "year"),
    ("in 2 hours", "2023-05-10T16:30", "2023-05-10T17:30", "hour"),
    ("in an hour", "2023-05-10T15:30", "2023-05-10T16:30", "hour"),
    ("3 hours ago", "2023-05-10T11:30", "2023-05-10T12:30", "hour"),
    ("in 10 minutes", "2023-05-10T14:40", "2023-05-10T14:41", "minute"),
    ("10 minutes ago", "2023-05-10T14:20", "2023-05-10T14:21", "minute"),
    # few / couple = 2 to 3 units
    ("a couple of days ago", "2023-05-07", "2023-05-09", "day"),
    ("couple of days ago", "2023-05-07", "2023-05-09", "day"),
    ("a few days ago", "2023-05-07", "2023-05-09", "day"),
    ("few days ago", "2023-05-07", "2023-05-09", "day"),
    ("in a few days", "2023-05-12", "2023-05-14", "day"),
    ("a couple of weeks ago", "2023-04-19", "2023-04-27", "day"),
    ("a few months ago", "2023-02-01", "2023-04-01", "month"),
]


@pytest.mark.parametrize(("text", "start", "end", "granularity"), OFFSETS)
def test_offsets(text, start, end, granularity):
    assert check(text, start, end, granularity).text == text


WINDOWS = [
    ("the past 3 days", "2023-05-07", "day"),
    ("the last 3 days", "2023-05-07", "day"),
    ("last 3 days", "2023-05-07", "day"),
    ("past week", "2023-05-03", "day"),
    ("the past two weeks", "2023-04-26", "day"),
    ("the last month", "2023-04-10", "day"),
    ("the past year", "2022-05-10", "day"),
    ("the past few days", "2023-05-07", "day"),
    ("the past 2 hours", "2023-05-10T12:30", "hour"),
]


@pytest.mark.parametrize(("text", "start", "granularity"), WINDOWS)
def test_rolling_windows_end_now(text, start, granularity):
    check(text, start, NOW.isoformat(), granularity)


MONTHS = [
    ("in May", "2023-05-01", "2023-06-01"),  # current month, already begun
    ("during May", "2023-05-01", "2023-06-01"),
    ("in April", "2023-04-01", "2023-05-01"),
    ("in June", "2022-06-01", "2022-07-01"),  # after now -> last year's
    ("in December", "2022-12-01", "2023-01-01"),
    ("last May", "2022-05-01", "2022-06-01"),  # strictly before the current month
    ("last April", "2023-04-01", "2023-05-01"),
    ("last June", "2022-06-01", "2022-07-01"),
    ("next May", "2024-05-01", "2024-06-01"),  # strictly after the current month
    ("next June", "2023-06-01", "2023-07-01"),
    ("next January", "2024-01-01", "2024-02-01"),
    ("this May", "2023-05-01", "2023-06-01"),
    ("this December", "2023-12-01", "2024-01-01"),
    ("May 2023", "2023-05-01", "2023-06-01"),
    ("in May 2022", "2022-05-01", "2022-06-01"),
    ("January 2021", "2021-01-01", "2021-02-01"),
    ("in Jan 2022", "2022-01-01", "2022-02-01"),
    ("Sept. 2020", "2020-09-01", "2020-10-01"),
    ("march, 2019", "2019-03-01", "2019-04-01"),
]


@pytest.mark.parametrize(("text", "start", "end"), MONTHS)
def test_months(text, start, end):
    assert check(text, start, end, "month").text == text


DAYS_OF_MONTH = [
    ("8 May 2023", "2023-05-08"),
    ("8 May, 2023", "2023-05-08"),
    ("8th May 2023", "2023-05-08"),
    ("May 8", "2023-05-08"),
    ("May 8th", "2023-05-08"),
    ("May 8th, 2023", "2023-05-08"),
    ("May 8, 2022", "2022-05-08"),
    ("on the 8th of May", "2023-05-08"),
    ("the 8th of May 2021", "2021-05-08"),
    ("on 8 May", "2023-05-08"),
    ("27 June, 2023", "2023-06-27"),
    ("Jan 5th", "2023-01-05"),
    ("Friday, May 12, 2023", "2023-05-12"),
    ("on Friday, 12 May 2023", "2023-05-12"),
    ("December 25", "2022-12-25"),  # no year: the occurrence closest to now
    ("November 1", "2023-11-01"),  # 175 days ahead beats 190 days back
    ("November 20", "2022-11-20"),  # 171 days back beats 194 days ahead
    ("29 February 2024", "2024-02-29"),
    ("on the 29th of February", "2024-02-29"),  # the nearest leap day
]


@pytest.mark.parametrize(("text", "day"), DAYS_OF_MONTH)
def test_days_of_month(text, day):
    span = only(text)
    assert (span.start, span.end - span.start, span.granularity) == (dt(day), ONE_DAY, "day")
    assert span.text == text


NUMERIC_DATES = [
    ("2023-05-08", "2023-05-08", "2023-05-09", "day"),
    ("On 2023-05-08.", "2023-05-08", "2023-05-09", "day"),
    ("on 5/8/2023", "2023-05-08", "2023-05-09", "day"),
    ("2023-05-08T13:56:00", "2023-05-08T13:56", "2023-05-08T13:57", "minute"),
    ("2023-05-08 13:56", "2023-05-08T13:56", "2023-05-08T13:57", "minute"),
    ("5/8/2023", "2023-05-08", "2023-05-09", "day"),  # US month/day/year
    ("12/31/2022", "2022-12-31", "2023-01-01", "day"),
]


@pytest.mark.parametrize(("text", "start", "end", "granularity"), NUMERIC_DATES)
def test_numeric_dates(text, start, end, granularity):
    check(text, start, end, granularity)


@pytest.mark.parametrize("text", ["2023-02-30", "13/1/2023", "February 30", "on the 31st of April"])
def test_impossible_dates_are_not_times(text):
    assert find_times(text, NOW) == []


def test_impossible_day_falls_back_to_its_month_and_year():
    assert check("31 February 2023", "2023-02-01", "2023-03-01", "month").text == "February 2023"


YEARS = [
    ("in 2022", "2022-01-01", "2023-01-01"),
    ("during 2019", "2019-01-01", "2020-01-01"),
    ("the summer of 2021", "2021-01-01", "2022-01-01"),
    ("year 2000", "2000-01-01", "2001-01-01"),
    ("2022", "2022-01-01", "2023-01-01"),
    ("2022?", "2022-01-01", "2023-01-01"),
    ("in 1900", "1900-01-01", "1901-01-01"),
]


@pytest.mark.parametrize(("text", "start", "end"), YEARS)
def test_years(text, start, end):
    check(text, start, end, "year")


SINCE = [
    ("since 2020", "2020-01-01", "year"),
    ("since May", "2023-05-01", "month"),
    ("since last May", "2022-05-01", "month"),
    ("since last week", "2023-05-01", "week"),
    ("since yesterday", "2023-05-09", "day"),
]


@pytest.mark.parametrize(("text", "start", "granularity"), SINCE)
def test_since_runs_to_now(text, start, granularity):
    assert check(text, start, NOW.isoformat(), granularity).text == text


def test_since_a_future_span_is_left_alone():
    check("since next week", "2023-05-15", "2023-05-22", "week")


@pytest.mark.parametrize("text", ["in 1899", "in 2101", "in 3000", "since 1850"])
def test_years_outside_1900_2100_are_ignored(text):
    assert find_times(text, NOW) == []


# --- clock times ------------------------------------------------------------------------------------

CLOCKS = [
    # bare, at 14:30: the next such time
    ("at 9", "2023-05-10T21:00", "hour"),  # 09:00 has passed, 21:00 has not
    ("at 3", "2023-05-10T15:00", "hour"),
    ("at 2", "2023-05-11T14:00", "hour"),  # 02:00 and 14:00 passed -> tomorrow, 1-6 read as pm
    ("at 9am", "2023-05-11T09:00", "hour"),
    ("at 9 am", "2023-05-11T09:00", "hour"),
    ("at 9pm", "2023-05-10T21:00", "hour"),
    ("9 p.m.", "2023-05-10T21:00", "hour"),
    ("at 9:30 pm", "2023-05-10T21:30", "minute"),
    ("9.30pm", "2023-05-10T21:30", "minute"),
    ("at 12am", "2023-05-11T00:00", "hour"),
    ("at 12pm", "2023-05-11T12:00", "hour"),
    ("at 14:30", "2023-05-11T14:30", "minute"),  # not after now -> tomorrow
    ("at 21:15", "2023-05-10T21:15", "minute"),
    ("at 09:00", "2023-05-11T09:00", "minute"),  # leading zero = 24-hour clock
    ("at noon", "2023-05-11T12:00", "hour"),
    ("at midnight", "2023-05-11T00:00", "hour"),
    ("at 9 o'clock", "2023-05-10T21:00", "hour"),
    ("at 9 in the morning", "2023-05-11T09:00", "hour"),
    ("at 7 in the evening", "2023-05-10T19:00", "hour"),
    ("at 11 at night", "2023-05-10T23:00", "hour"),
    # with a day
    ("tomorrow at 9", "2023-05-11T09:00", "hour"),
    ("tomorrow at 3", "2023-05-11T15:00", "hour"),  # 1-6 read as pm with a day
    ("tomorrow at 12", "2023-05-11T12:00", "hour"),
    ("at 9 tomorrow", "2023-05-11T09:00", "hour"),
    ("today at 9", "2023-05-10T21:00", "hour"),  # the one still ahead today
    ("tomorrow at 9:30 pm", "2023-05-11T21:30", "minute"),
    ("tomorrow at noon", "2023-05-11T12:00", "hour"),
    ("tomorrow at midnight", "2023-05-12T00:00", "hour"),  # the end of tomorrow
    ("next Friday at 10am", "2023-05-12T10:00", "hour"),
    ("at 8 on Friday", "2023-05-12T08:00", "hour"),
    ("tonight at 8", "2023-05-10T20:00", "hour"),
    ("this morning at 9", "2023-05-10T09:00", "hour"),
    ("tomorrow morning at 11", "2023-05-11T11:00", "hour"),
    ("Friday, at 5", "2023-05-12T17:00", "hour"),
    ("1:56 pm on 8 May, 2023", "2023-05-08T13:56", "minute"),
    ("10:37 am on 27 June, 2023", "2023-06-27T10:37", "minute"),
    ("on 2023-05-20 at 7:15", "2023-05-20T07:15", "minute"),
]


@pytest.mark.parametrize(("text", "start", "granularity"), CLOCKS)
def test_clock_times(text, start, granularity):
    span = only(text)
    step = {"hour": 3600, "minute": 60}[granularity]
    assert (span.start, span.granularity, (span.end - span.start).total_seconds()) == (dt(start), granularity, step)
    assert span.text == text


@pytest.mark.parametrize(
    ("now", "text", "start"),
    [
        (datetime(2023, 5, 10, 10, 0), "tomorrow at 9", "2023-05-11T09:00"),  # the brief's example
        (datetime(2023, 5, 10, 8, 0), "at 9", "2023-05-10T09:00"),
        (datetime(2023, 5, 10, 9, 0), "at 9", "2023-05-10T21:00"),  # exactly 09:00 is not "after now"
        (datetime(2023, 5, 10, 22, 0), "at 9", "2023-05-11T09:00"),
        (datetime(2023, 5, 10, 1, 0), "at 3", "2023-05-10T03:00"),  # next 3 o'clock, documented
        (datetime(2023, 5, 10, 13, 0), "at 12", "2023-05-11T12:00"),
        (datetime(2023, 5, 10, 8, 0), "at 9am", "2023-05-10T09:00"),
        (NEW_YEARS_EVE, "at 9", "2024-01-01T09:00"),
    ],
)
def test_clock_times_from_other_hours(now, text, start):
    assert only(text, now).start == dt(start)


@pytest.mark.parametrize("text", ["at 25:00", "at 13pm", "at 0am", "at 9:75"])
def test_impossible_clock_times_are_not_times(text):
    assert find_times(text, NOW) == []


# --- boundaries: year end, year start, leap day ---------------------------------------------------

BOUNDARIES = [
    (NEW_YEARS_EVE, "tomorrow", "2024-01-01", "2024-01-02", "day"),
    (NEW_YEARS_EVE, "next week", "2024-01-01", "2024-01-08", "week"),
    (NEW_YEARS_EVE, "this weekend", "2023-12-30", "2024-01-01", "day"),
    (NEW_YEARS_EVE, "next weekend", "2024-01-06", "2024-01-08", "day"),
    (NEW_YEARS_EVE, "next month", "2024-01-01", "2024-02-01", "month"),
    (NEW_YEARS_EVE, "next year", "2024-01-01", "2025-01-01", "year"),
    (NEW_YEARS_EVE, "in January", "2023-01-01", "2023-02-01", "month"),
    (NEW_YEARS_EVE, "next May", "2024-05-01", "2024-06-01", "month"),
    (NEW_YEARS_EVE, "Jan 2", "2024-01-02", "2024-01-03", "day"),
    (NEW_YEARS_EVE, "this Sunday", "2023-12-31", "2024-01-01", "day"),
    (NEW_YEARS_EVE, "the past month", "2023-11-30", "2023-12-31T23:00", "day"),
    (NEW_YEAR, "yesterday", "2023-12-31", "2024-01-01", "day"),
    (NEW_YEAR, "last week", "2023-12-25", "2024-01-01", "week"),
    (NEW_YEAR, "last month", "2023-12-01", "2024-01-01", "month"),
    (NEW_YEAR, "last year", "2023-01-01", "2024-01-01", "year"),
    (NEW_YEAR, "in December", "2023-12-01", "2024-01-01", "month"),
    (NEW_YEAR, "last December", "2023-12-01", "2024-01-01", "month"),
    (NEW_YEAR, "this December", "2024-12-01", "2025-01-01", "month"),
    (NEW_YEAR, "Dec 30", "2023-12-30", "2023-12-31", "day"),
    (NEW_YEAR, "last Sunday", "2023-12-31", "2024-01-01", "day"),
    (NEW_YEAR, "a couple of days ago", "2023-12-29", "2023-12-31", "day"),
    (NEW_YEAR, "last weekend", "2023-12-30", "2024-01-01", "day"),
    (LEAP, "tomorrow", "2024-02-29", "2024-03-01", "day"),
    (LEAP, "the day after tomorrow", "2024-03-01", "2024-03-02", "day"),
    (LEAP, "in 2 days", "2024-03-01", "2024-03-02", "day"),
    (LEAP, "next Friday", "2024-03-01", "2024-03-02", "day"),
    (LEAP, "this weekend", "2024-03-02", "2024-03-04", "day"),
    (LEAP, "next month", "2024-03-01", "2024-04-01", "month"),
    (LEAP, "a year ago", "2023-01-01", "2024-01-01", "year"),
    (LEAP, "on the 29th of February", "2024-02-29", "2024-03-01", "day"),
    (LEAP, "tomorrow morning at 9", "2024-02-29T09:00", "2024-02-29T10:00", "hour"),
    (datetime(2024, 1, 31, 12), "in a month", "2024-02-01", "2024-03-01", "month"),
    (datetime(2024, 3, 31, 12), "the past month", "2024-02-29", "2024-03-31T12:00", "day"),
]


@pytest.mark.parametrize(("now", "text", "start", "end", "granularity"), BOUNDARIES)
def test_boundaries(now, text, start, end, granularity):
    check(text, start, end, granularity, now)


# --- false positives ---------------------------------------------------------------------------------

NOT_TIMES = [
    "May I ask you something?",
    "I may go to the gym.",
    "This may take a while.",
    "I think 3 may be enough.",
    "March on, soldiers!",
    "They will march in the parade.",
    "I'd like a second opinion.",
    "Will you help me?",
    "I bought 3 apples.",
    "Please call 5551234.",
    "Call 555-1234 now.",
    "I was at 3 stores and 2 malls.",
    "She is 30 years old.",
    "I spent 2 weeks in Spain.",
    "We have a few days off.",
    "Mondays are hard.",
    "He scored 2022 points.",
    "at the last minute",
    "When did Caroline go to the LGBTQ support group?",
    "April and June are my sisters.",
    "It costs 12.50 dollars.",
    "Room 1999 is upstairs.",
]


@pytest.mark.parametrize("text", NOT_TIMES)
def test_false_positives_find_nothing(text):
    assert find_times(text, NOW) == []
    assert query_range(text, NOW) is None
    assert resolve_date(text, NOW) is None


# --- find_times on sentences ---------------------------------------------------------------------------


def test_sentence_with_several_times_in_order():
    spans = find_times("Yesterday I booked a flight for next Friday at 7:15 am, back on May 20th.", NOW)
    assert [s.text for s in spans] == ["Yesterday", "next Friday at 7:15 am", "on May 20th"]
    assert [s.start for s in spans] == [dt("2023-05-09"), dt("2023-05-12T07:15"), dt("2023-05-20")]
    assert [s.granularity for s in spans] == ["day", "minute", "day"]


def test_longest_match_wins_and_spans_do_not_overlap():
    spans = find_times("the day before yesterday and 8 May, 2023 and in May 2022", NOW)
    assert [s.text for s in spans] == ["the day before yesterday", "8 May, 2023", "in May 2022"]


def test_text_is_as_written_in_the_input():
    text = "I'm flying to Lisbon NEXT friday, back In June 2023."
    spans = find_times(text, NOW)
    assert [s.text for s in spans] == ["NEXT friday", "In June 2023"]
    assert all(s.text in text for s in spans)


def test_lisbon_example_from_the_brief():
    assert resolve_date("I'm flying to Lisbon next Friday", datetime(2023, 5, 8, 9, 0)) == date(2023, 5, 12)


def test_find_times_has_no_tense_detection_bare_weekday_is_ahead():
    assert only("What did I do on Friday?").start == dt("2023-05-12")


def test_no_times_in_empty_text():
    assert find_times("", NOW) == []
    assert find_times("Hello there, how are you?", NOW) == []


INVARIANT_TEXTS = [
    row[0] for row in RELATIVE_DAYS + PARTS_OF_DAY + WEEKDAYS + CALENDAR_UNITS + OFFSETS + MONTHS + CLOCKS
]


@pytest.mark.parametrize("now", [NOW, NEW_YEARS_EVE, NEW_YEAR, LEAP])
def test_every_span_is_well_formed(now):
    for text in INVARIANT_TEXTS:
        for span in find_times(f"So, {text}.", now):
            assert span.start < span.end, text
            assert span.granularity in {"minute", "hour", "day", "week", "month", "year"}, text
            assert span.text in text, text


# --- resolve_date ------------------------------------------------------------------------------------------

RESOLVE = [
    ("next Friday", "2023-05-12"),
    ("tomorrow", "2023-05-11"),
    ("the day before yesterday", "2023-05-08"),
    ("3 days ago", "2023-05-07"),
    ("in 2 weeks", "2023-05-24"),
    ("8 May 2023", "2023-05-08"),
    ("on the 8th of May", "2023-05-08"),
    ("2023-05-08", "2023-05-08"),
    ("5/8/2023", "2023-05-08"),
    ("tomorrow at 9", "2023-05-11"),
    ("in 2 hours", "2023-05-10"),
    ("tonight", "2023-05-10"),
    ("at midnight", "2023-05-11"),
    ("I went there last Friday and again on Monday", "2023-05-05"),  # the first expression
]


@pytest.mark.parametrize(("phrase", "day"), RESOLVE)
def test_resolve_date(phrase, day):
    assert resolve_date(phrase, NOW) == date.fromisoformat(day)


@pytest.mark.parametrize(
    "phrase",
    [
        "next week",
        "last May",
        "in 2022",
        "this weekend",
        "a few days ago",
        "the past 3 days",
        "since yesterday",
        "nothing",
        "",
    ],
)
def test_resolve_date_none_unless_a_single_day(phrase):
    assert resolve_date(phrase, NOW) is None


# --- query_range -------------------------------------------------------------------------------------------

QUESTIONS = [
    ("What did I do last May?", "2022-05-01", "2022-06-01", "month", "last May"),
    ("What happened yesterday?", "2023-05-09", "2023-05-10", "day", "yesterday"),
    ("What did we talk about last week?", "2023-05-01", "2023-05-08", "week", "last week"),
    ("Where did I travel in 2022?", "2022-01-01", "2023-01-01", "year", "in 2022"),
    ("What did I do in May?", "2023-05-01", "2023-06-01", "month", "in May"),
    ("What have I read since 2020?", "2020-01-01", "2023-05-10T14:30", "year", "since 2020"),
    ("What did I eat a few days ago?", "2023-05-07", "2023-05-09", "day", "a few days ago"),
    ("What did I do on Friday?", "2023-05-05", "2023-05-06", "day", "on Friday"),  # past tense -> last Friday
    ("Where was I on Monday?", "2023-05-08", "2023-05-09", "day", "on Monday"),
    ("What am I doing on Friday?", "2023-05-12", "2023-05-13", "day", "on Friday"),  # no past tense
    ("Anything in the past 3 days?", "2023-05-07", "2023-05-10T14:30", "day", "the past 3 days"),
    (
        "What happened between March 2022 and June 2022?",
        "2022-03-01",
        "2022-07-01",
        "month",
        "March 2022 and June 2022",
    ),
    ("Did I call mom yesterday or last Friday?", "2023-05-05", "2023-05-10", "day", "yesterday or last Friday"),
    ("What did I do in 2021 and last month?", "2021-01-01", "2023-05-01", "year", "in 2021 and last month"),
]


@pytest.mark.parametrize(("question", "start", "end", "granularity", "text"), QUESTIONS)
def test_query_range(question, start, end, granularity, text):
    assert query_range(question, NOW) == TimeSpan(dt(start), dt(end), text, granularity)


@pytest.mark.parametrize(
    "question",
    [
        "When did Caroline go to the LGBTQ support group?",
        "What is my favourite colour?",
        "May I ask what you remember?",
        "Who did I meet?",
    ],
)
def test_query_range_none_without_a_time(question):
    assert query_range(question, NOW) is None


# --- parse_session_time --------------------------------------------------------------------------------------

SESSION_TIMES = [
    ("1:56 pm on 8 May, 2023", datetime(2023, 5, 8, 13, 56)),
    ("10:37 am on 27 June, 2023", datetime(2023, 6, 27, 10, 37)),
    ("8:50 pm on 12 January, 2023", datetime(2023, 1, 12, 20, 50)),
    ("12:09 am on 13 September, 2023", datetime(2023, 9, 13, 0, 9)),
    ("12:30 pm on 1 March, 2022", datetime(2022, 3, 1, 12, 30)),
    ("7:05 AM on 2 Aug 2023", datetime(2023, 8, 2, 7, 5)),
    ("  1:56 pm on 8 May, 2023\n", datetime(2023, 5, 8, 13, 56)),
    ("2023-05-08T13:56:00", datetime(2023, 5, 8, 13, 56)),
    ("2023-05-08 13:56", datetime(2023, 5, 8, 13, 56)),
    ("2023-05-08", datetime(2023, 5, 8)),
]


@pytest.mark.parametrize(("text", "expected"), SESSION_TIMES)
def test_parse_session_time(text, expected):
    assert parse_session_time(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "next Friday",
        "8 May 2023",
        "1:56 pm",
        "13:56 pm on 8 May, 2023",
        "0:56 am on 8 May, 2023",
        "1:56 pm on 31 February, 2023",
        "1:56 pm on 8 Mayo, 2023",
        "2023-13-01",
        "2023-05-08T13:56:00+02:00",
        "20230508",
        "5/8/2023",
        "1:56 pm on 8 May, 2023 and more",
    ],
)
def test_parse_session_time_rejects_anything_else(text):
    with pytest.raises(ValueError):
        parse_session_time(text)


def test_an_aware_now_is_read_as_its_wall_clock():
    from datetime import timezone

    aware = datetime(2023, 5, 10, 14, 30, tzinfo=timezone.utc)
    span = query_range("dentist on Tuesday at 9:00", aware)
    assert span is not None and span.start == datetime(2023, 5, 16, 9, 0) and span.start.tzinfo is None
