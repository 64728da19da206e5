"""Reminders and to-dos on a real encrypted store, with the time handed in."""

from datetime import datetime, time, timedelta, timezone

import pytest

from anima.config import load_config
from anima.errors import NotFound
from anima.recurrence import parse_rule
from anima.store import open_store
from anima.timeparse import clock_time
from anima.tools import Toolbox, ToolContext, ToolError
from anima.tools import reminders as rm

TZ = timezone(timedelta(hours=2))
NOW = datetime(2024, 5, 8, 14, 30, tzinfo=TZ)  # a Wednesday afternoon


@pytest.fixture
def store(anima_home):
    s = open_store(anima_home, "tester")
    yield s
    s.close()


@pytest.mark.parametrize(
    "when, expected",
    [
        ("tomorrow at 9", "2024-05-09T09:00:00+02:00"),
        ("in 2 hours", "2024-05-08T16:30:00+02:00"),
        ("Friday at 5pm", "2024-05-10T17:00:00+02:00"),
        ("at noon", "2024-05-09T12:00:00+02:00"),
        ("tomorrow", "2024-05-09T09:00:00+02:00"),
        ("tonight", "2024-05-08T21:00:00+02:00"),
        ("every Monday at 9", "2024-05-13T09:00:00+02:00"),
        ("every day at 8", "2024-05-09T08:00:00+02:00"),
        ("every weekday", "2024-05-09T09:00:00+02:00"),
        ("every 2 weeks on Monday", "2024-05-13T09:00:00+02:00"),
    ],
)
def test_times_people_say(when, expected):
    assert rm.parse_when(when, NOW)[0].isoformat() == expected


@pytest.mark.parametrize(
    "when, words",
    [
        ("remind me yesterday", "in the past"),
        ("yesterday at 9", "in the past"),
        ("next week", "not one time"),
        ("soonish", "cannot tell when"),
        ("Friday or Saturday", "more than one time"),
        ("today", "needs a time of day"),
        ("every Monday at 25", "cannot read 'at 25'"),
        ("every blue moon", "cannot read"),
        ("", "no time given"),
    ],
)
def test_bad_times_are_one_clear_line_with_a_form_that_works(when, words):
    with pytest.raises(ToolError) as caught:
        rm.parse_when(when, NOW)
    assert words in caught.value.message and "\n" not in str(caught.value)
    assert caught.value.hint and ("tomorrow" in caught.value.hint or "e.g." in caught.value.hint)


def test_repeat_rules():
    monday = parse_rule("every Monday at 9")
    first = monday.first(NOW.replace(tzinfo=None))
    assert [first.isoformat(), monday.after(first).isoformat()] == ["2024-05-13T09:00:00", "2024-05-20T09:00:00"]
    weekday = parse_rule("every weekday at 8")
    friday = datetime(2024, 5, 10, 8)
    assert weekday.after(friday) == datetime(2024, 5, 13, 8)  # skips the weekend
    fortnight = parse_rule("every 2 weeks")
    assert fortnight.after(datetime(2024, 5, 9, 9)) == datetime(2024, 5, 23, 9)
    assert parse_rule("every Mon and Thu").weekdays == {0, 3}
    assert parse_rule("daily at 7:30").at == time(7, 30)
    assert parse_rule("tomorrow at 9") is None
    # missed occurrences are counted, and the next one is after now
    assert monday.next_after(datetime(2024, 5, 13, 9), datetime(2024, 6, 1, 12)) == (datetime(2024, 6, 3, 9), 2)


def test_clock_time_reads_a_time_as_said_with_a_day():
    assert clock_time("at 9") == time(9) and clock_time("at 3") == time(15) and clock_time("5:30pm") == time(17, 30)
    assert clock_time("noon") == time(12) and clock_time("at 25") is None and clock_time("9") is None


def test_add_list_complete_cancel(store):
    a = rm.add_reminder(store, "call mum", "tomorrow at 9", NOW)
    b = rm.add_reminder(store, "water plants", "in 2 hours", NOW)
    assert a.due == "2024-05-09T09:00:00+02:00" and a.status == "open" and a.kind == "reminder"
    assert [r.text for r in rm.list_reminders(store)] == ["water plants", "call mum"]  # soonest first
    assert rm.complete(store, b.id, NOW).status == "done"
    assert rm.cancel(store, a.id, NOW).status == "cancelled"
    assert rm.list_reminders(store) == []
    assert len(rm.list_reminders(store, include_closed=True)) == 2
    with pytest.raises(ToolError, match="already done"):
        rm.complete(store, b.id, NOW)
    with pytest.raises(NotFound, match="no reminder or to-do with id 99"):
        rm.complete(store, 99, NOW)


def test_completing_a_repeating_reminder_moves_it_to_its_next_time(store):
    r = rm.add_reminder(store, "team call", "every Monday at 9", NOW)
    assert r.due == "2024-05-13T09:00:00+02:00" and r.every == "every Monday at 9"
    r = rm.complete(store, r.id, NOW)
    assert r.status == "open" and r.due == "2024-05-20T09:00:00+02:00"


def test_due_and_fire_once_per_time(store):
    r = rm.add_reminder(store, "stretch", "every day at 8", NOW)
    assert rm.due(store, NOW) == []
    morning = datetime(2024, 5, 9, 8, 0, tzinfo=TZ)
    assert rm.due(store, morning - timedelta(minutes=1)) == []
    (found,) = rm.due(store, morning)
    assert found.id == r.id
    assert rm.fire(store, found, morning) == 0
    assert rm.due(store, morning) == []  # fired for this time
    assert rm.get(store, r.id).due == "2024-05-10T08:00:00+02:00"
    # off for three days: the late one fires once, two times were skipped
    later = datetime(2024, 5, 12, 12, 0, tzinfo=TZ)
    (found,) = rm.due(store, later)
    assert rm.fire(store, found, later) == 2
    assert rm.get(store, r.id).due == "2024-05-13T08:00:00+02:00"


def test_todos(store):
    t = rm.add_todo(store, "file taxes", now=NOW)
    d = rm.add_todo(store, "buy milk", "tomorrow at 6pm", NOW)
    assert t.due is None and d.due == "2024-05-09T18:00:00+02:00"
    assert [x.text for x in rm.list_todos(store)] == ["buy milk", "file taxes"]
    assert rm.done(store, t.id, NOW).status == "done"
    reminder = rm.add_reminder(store, "not a to-do", "in 1 hour", NOW)
    with pytest.raises(NotFound, match="no to-do"):
        rm.done(store, reminder.id, NOW)
    with pytest.raises(ToolError, match="no text"):
        rm.add_todo(store, "  ", now=NOW)


def test_tools_for_the_model(store):
    box = Toolbox(rm.tools(ToolContext(store, load_config(), clock=lambda: NOW)))
    assert {"remind", "reminders_list", "todo_add", "todo_done"} <= set(box.tools)
    assert box.tools["remind"].side_effects and not box.tools["reminders_list"].side_effects
    result = box.call("remind", {"text": "call Ana", "when": "Friday at 5pm"})
    assert result.ok and "Fri 10 May 17:00" in result.content
    assert "call Ana" in box.call("reminders_list", {}).content
    bad = box.call("remind", {"text": "call Ana", "when": "yesterday"})
    assert not bad.ok and "in the past" in bad.content
    assert box.call("todo_add", {"text": "pay rent", "due": "every month"}).ok
    assert "pay rent" in box.call("todo_list", {}).content


def test_the_users_words_outrank_the_models_reading_of_a_time():
    from anima.tools import user_message

    cases = [
        (
            "Remind me to call the dentist tomorrow at 9",
            "tomorrow at 9 pm",
            "tomorrow at 9",
        ),  # the user's one time wins
        (
            "remind me every Monday at 9 to water the plants",
            "every Monday at 9",
            "every Monday at 9",
        ),  # a rule stays the model's
        (
            "after the 3pm meeting, remind me tomorrow at 10",
            "tomorrow at 10",
            "tomorrow at 10",
        ),  # two times named: the model chose
        ("remind me to stretch", "in 1 hour", "in 1 hour"),  # no time in the message
    ]
    for said, when, expected in cases:
        token = user_message.set(said)
        try:
            assert rm.in_their_words(when, NOW) == expected, said
        finally:
            user_message.reset(token)
    assert rm.in_their_words("tomorrow at 9 pm", NOW) == "tomorrow at 9 pm"  # outside a chat turn


def test_a_chat_turn_sets_the_reminder_at_the_time_the_user_said(anima_home):
    from anima.app import build
    from anima.models.fake import FakeChatModel

    call = (
        '<tool_call>{"name": "remind", '
        '"arguments": {"text": "call the dentist", "when": "tomorrow at 9 pm"}}</tool_call>'
    )
    c = build(load_config(backend="fake", memory={"enabled": False}), chat_model=FakeChatModel([call, "Done."]))
    reply = c.assistant.reply("Remind me to call the dentist tomorrow at 9")
    reply.text()
    assert [r.name for r in reply.tool_results] == ["remind"] and reply.tool_results[0].ok, [
        r.to_dict() for r in reply.tool_results
    ]
    (due,) = rm.list_reminders(c.store)
    tomorrow = (datetime.now() + timedelta(days=1)).date()
    assert due.due_at().date() == tomorrow and due.due_at().strftime("%H:%M") == "09:00"
