"""Built-in tools: goals, notes, calculator and date math; through plain functions, a
Toolbox (as the model calls them) and the CLI. Real encrypted store, fixed clock."""

import json
from datetime import datetime, timezone

import pytest
from typer.testing import CliRunner

from anima.cli import app
from anima.config import load_config
from anima.errors import BadInput, NotFound
from anima.tools import Toolbox, ToolContext, calc, goals, notes
from anima.tools.calc import calculate, date_math
from anima.tools.goals import (
    add_goal,
    add_milestone,
    complete_milestone,
    list_goals,
    open_goals,
    set_progress,
    set_status,
)
from anima.tools.notes import add_note, delete_note, list_notes, search_notes

NOW = datetime(2026, 5, 13, 10, 0)  # a Wednesday


@pytest.fixture
def ctx(store):
    return ToolContext(store, load_config(), clock=lambda: NOW)


# --- goals -----------------------------------------------------------------------------------


def test_goal_progress_comes_from_milestones(store):
    goal = add_goal(
        store, "Run a marathon", "health", "in 3 weeks", ["Run 10 km", "Run 20 km", "Run 30 km", "Race"], NOW
    )
    assert (
        goal["due"] == "2026-06-03" and goal["progress"] == 0 and [m["n"] for m in goal["milestones"]] == [1, 2, 3, 4]
    )
    goal = complete_milestone(store, goal["id"], 1)
    goal = complete_milestone(store, goal["id"], "20 km")
    assert goal["progress"] == 50
    assert [m["done"] for m in goal["milestones"]] == [True, True, False, False]
    goal = add_milestone(store, goal["id"], "Rest")
    assert goal["progress"] == 40  # 2 of 5
    with pytest.raises(BadInput, match="comes from its milestones"):
        set_progress(store, goal["id"], 90)
    assert set_status(store, goal["id"], "done")["progress"] == 100
    assert open_goals(store) == []


def test_open_goals_shape_order_and_manual_progress(store):
    later = add_goal(store, "Learn Portuguese", due="2026-12-01", now=NOW)
    sooner = add_goal(store, "Tax return", due="next Friday", now=NOW)
    undated = add_goal(store, "Read more", now=NOW)
    set_progress(store, later["id"], 30)
    set_status(store, undated["id"], "dropped")
    rows = open_goals(store)
    assert [g["id"] for g in rows] == [sooner["id"], later["id"]]
    assert {"id", "title", "progress", "due", "milestones"} <= set(rows[0])
    assert rows[0]["due"] == "2026-05-15" and rows[1]["progress"] == 30
    assert [g["title"] for g in list_goals(store, "dropped")] == ["Read more"]
    assert len(list_goals(store, None)) == 3


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda s: add_goal(s, "  ", now=NOW), "needs a title"),
        (lambda s: add_goal(s, "x", due="whenever", now=NOW), "cannot read a date"),
        (lambda s: add_goal(s, "x", due="2025-01-01", now=NOW), "in the past"),
        (lambda s: set_progress(s, 99, 10), "no goal with id 99"),
        (lambda s: set_progress(s, add_goal(s, "x", now=NOW)["id"], 140), "0-100"),
        (lambda s: set_status(s, add_goal(s, "x", now=NOW)["id"], "paused"), "unknown status"),
        (
            lambda s: complete_milestone(s, add_goal(s, "x", milestones=["a"], now=NOW)["id"], 7),
            "no milestone matching '7'",
        ),
    ],
)
def test_goal_errors_are_one_clear_line(store, call, error):
    with pytest.raises(BadInput, match=error) as info:
        call(store)
    assert "\n" not in str(info.value) and info.value.hint


def test_goal_tools_through_a_toolbox(ctx):
    box = Toolbox(goals.tools(ctx))
    assert all(t.side_effects for t in box.tools.values() if t.name != "goal_list")
    result = box.call("goal_add", {"title": "Ship v1", "due": "Friday", "milestones": ["spec", "code", "docs"]})
    assert result.ok and "#1 Ship v1: 0%, due 2026-05-15 (next: spec)" in result.content
    result = box.call("goal_update", {"goal_id": 1, "milestone_done": "spec"})
    assert result.ok and "33%" in result.content and "(next: code)" in result.content
    assert "#1 Ship v1: 33%" in box.call("goal_list", {}).content
    bad = [
        box.call("goal_add", {}),  # missing title
        box.call("goal_update", {"goal_id": "one"}),  # wrong type
        box.call("goal_update", {"goal_id": 1}),  # nothing to change
        box.call("goal_update", {"goal_id": 5, "progress": 10}),  # no such goal
        box.call("goal_list", {"status": "someday"}),  # not in the enum
    ]
    assert [r.ok for r in bad] == [False] * 5
    assert "no goal with id 5" in bad[3].content and "nothing to change" in bad[2].content


# --- notes -----------------------------------------------------------------------------------


def test_notes_add_search_list_delete(store):
    a = add_note(store, "Ana's birthday gift: a ceramic teapot", "gift ideas")
    b = add_note(store, "Wifi password at the cabin is on the fridge")
    add_note(store, "Buy teapots for the office")
    hits = search_notes(store, "teapot")
    assert {h["id"] for h in hits} == {a["id"], 3}  # porter stemming: teapots ~ teapot
    assert search_notes(store, "gift")[0]["id"] == a["id"]  # the title is searched too
    assert [n["id"] for n in list_notes(store)] == [3, b["id"], a["id"]]
    delete_note(store, a["id"])
    assert [h["id"] for h in search_notes(store, "teapot")] == [3]
    with pytest.raises(NotFound, match="no note with id 1"):
        delete_note(store, a["id"])
    with pytest.raises(BadInput, match="needs some text"):
        add_note(store, "   ")


def test_note_tools_through_a_toolbox(ctx):
    box = Toolbox(notes.tools(ctx))
    assert box.call("note_add", {"text": "Plumber: call Tuesday"}).content == "saved note #1 Plumber: call Tuesday"
    assert "#1 Plumber" in box.call("note_search", {"query": "plumber"}).content
    assert "#1 Plumber" in box.call("note_search", {}).content  # no query: the latest
    assert box.call("note_search", {"query": "zebra"}).content == "no notes about 'zebra'"
    assert not box.call("note_delete", {"note_id": 9}).ok
    assert not box.call("note_add", {"text": 5}).ok


# --- calculator and date math ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression, value",
    [
        ("(3 + 4) * 2", 14),
        ("2^10", 1024),
        ("-3**2", -9),
        ("7 // 2 + 7 % 2", 4),
        ("sqrt(16) + abs(-2)", 6.0),
        ("round(pi, 3)", 3.142),
        ("max(1, 5, 3) - min(4, 2)", 3),
        ("log(e)", 1.0),
    ],
)
def test_calculator(expression, value):
    assert calculate(expression) == pytest.approx(value)


@pytest.mark.parametrize(
    "expression, error",
    [
        ("__import__('os')", "not allowed"),
        ("9**9**9", "too large"),
        ("(1).__class__", "not allowed"),
        ("x + 1", "not allowed"),
        ("open('f')", "not allowed"),
        ("'a' * 3", "not allowed"),
        ("1 / 0", "division by zero"),
        ("sqrt(-1)", "math domain error"),
        ("1e308 * 10", "too large"),
        ("2 +", "cannot read"),
        ("[1, 2]", "not allowed"),
    ],
)
def test_calculator_refuses(expression, error):
    with pytest.raises(BadInput, match=error):
        calculate(expression)


@pytest.mark.parametrize(
    "question, answer",
    [
        ("days until 25 December", "226 days until Friday 25 December 2026 (2026-12-25)"),
        ("how many days until 1 May?", "353 days until Saturday 1 May 2027"),  # this year's has passed
        ("date 3 weeks after 2026-12-01", "is Tuesday 22 December 2026 (2026-12-22)"),
        ("a month after 2026-01-31", "is Saturday 28 February 2026"),
        ("10 days before 2026-03-01", "is Thursday 19 February 2026"),
        ("weekday of 2026-12-25", "25 December 2026 is a Friday"),
        ("days between 2026-01-01 and 2026-12-25", "358 days between"),
        ("days since 1 January 2026", "132 days since"),
        ("days until Friday", "2 days until Friday 15 May 2026"),
    ],
)
def test_date_math_against_a_fixed_clock(question, answer):
    assert answer in date_math(question, NOW)


def test_calc_tools_through_a_toolbox(ctx):
    box = Toolbox(calc.tools(ctx))
    assert box.call("calculator", {"expression": "0.1 + 0.2"}).content == "0.1 + 0.2 = 0.3"
    assert box.call("calculator", {"expression": "6 / 3"}).content == "6 / 3 = 2"
    refused = box.call("calculator", {"expression": "__import__('os').system('true')"})
    assert not refused.ok and "not allowed" in refused.content
    assert "22 December 2026" in box.call("date_math", {"question": "3 weeks after 2026-12-01"}).content
    assert not box.call("date_math", {"question": "what is love"}).ok
    assert not box.call("calculator", {"expr": "1"}).ok


def test_date_math_uses_the_clock_of_the_context(store):
    aware = datetime(2026, 12, 24, 12, tzinfo=timezone.utc)
    box = Toolbox(calc.tools(ToolContext(store, load_config(), clock=lambda: aware)))
    assert (
        "1 day until Friday 25 December 2026" in box.call("date_math", {"question": "days until 25 December"}).content
    )


# --- CLI ---------------------------------------------------------------------------------------

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def test_cli_goals_and_notes():
    assert "added #1 Ship v1: 0%" in run("goals", "add", "Ship v1", "-m", "spec", "-m", "code").stdout
    assert "Ship v1: 50%" in run("goals", "done", "1", "spec").stdout
    rows = json.loads(run("goals", "list", "--json").stdout)
    assert rows[0]["progress"] == 50 and rows[0]["milestones"][0] == {"n": 1, "title": "spec", "done": True}
    assert "[done]" in run("goals", "done", "1").stdout
    assert "no active goals" in run("goals", "list").stdout
    result = run("goals", "progress", "7", "20")
    assert result.exit_code == 1 and "no goal with id 7" in result.stderr
    assert "saved note #1" in run("notes", "add", "Call [the] plumber", "--title", "house").stdout
    assert json.loads(run("notes", "search", "plumber", "--json").stdout)[0]["title"] == "house"
    assert "Call [the] plumber" in run("notes", "list").stdout  # brackets shown as written, not as markup
    result = run("notes", "search", "the")  # a stopword alone still searches
    assert result.exit_code == 0
