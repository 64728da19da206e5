"""Multi-step tasks and the tool loop with the real embedded model."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from typer.testing import CliRunner

from anima.app import build
from anima.cli import app
from anima.config import load_config
from anima.tools import calendar, goals, reminders

pytestmark = pytest.mark.model

ICS = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//anima test//EN
BEGIN:VEVENT
UID:dinner@test
DTSTART:{day}T180000
DTEND:{day}T193000
SUMMARY:Team dinner
END:VEVENT
END:VCALENDAR
"""


class OnFriday(datetime):
    """A fixed clock: the plan's prompts carry today's date and the calendar's week, so
    the seeded model writes the same plan whatever day the suite runs (on Saturday
    2026-12-05 it planned six one-line write steps)."""

    @classmethod
    def now(cls, tz=None):
        return cls(2026, 12, 4, 10, 0, tzinfo=tz)


def test_a_plan_with_tools_runs_to_the_end(link_models, tmp_path, monkeypatch):
    link_models("default", "minilm")
    for module in ("anima.cli.tasks", "anima.assistant.tasks", "anima.tools"):
        monkeypatch.setattr(f"{module}.datetime", OnFriday)
    config = load_config(memory={"learn": False}, generation={"seed": 7, "max_tokens": 300})
    store = build(config).store
    goals.add_goal(
        store,
        "Run the Lisbon marathon",
        why="first marathon",
        due="2027-03-14",
        milestones=["run 10 km", "long run of 25 km", "long run of 32 km"],
    )
    ics = tmp_path / "week.ics"
    ics.write_text(ICS.format(day=OnFriday.now().strftime("%Y%m%d")))
    calendar.import_ics(store, ics)
    store.close()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["do", "plan my week around my marathon training goal", "--yes", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    steps = report["steps"]
    tool_steps = [s for s in steps if s["tool"] != "write"]
    assert tool_steps and all(s["ok"] for s in tool_steps), steps  # it looked something up with a tool, and that worked
    written = [s for s in steps if s["tool"] == "write" and s["ok"]]
    assert written and max(len(s["result"]) for s in written) > 100, steps  # and wrote something substantial
    summary = (tmp_path / report["folder"] / "result.md").read_text()
    assert all(s["title"] in summary for s in steps)


def test_the_model_sets_a_reminder_through_the_tool_loop(link_models):
    link_models("default", "minilm")
    container = build(load_config(memory={"enabled": False}))
    reply = container.assistant.reply(
        "Remind me to call the dentist tomorrow at 9", options=container.assistant.options(temperature=0, max_tokens=80)
    )
    text = reply.text()
    assert [r.name for r in reply.tool_results][:1] == ["remind"] and reply.tool_results[0].ok, [
        r.to_dict() for r in reply.tool_results
    ]
    (due,) = reminders.list_reminders(container.store)
    # the time is the user's "tomorrow at 9", whatever the model wrote for it (it has written "9 pm")
    tomorrow = (datetime.now() + timedelta(days=1)).date()
    assert (
        "dentist" in due.text.lower() and due.due_at().date() == tomorrow and due.due_at().strftime("%H:%M") == "09:00"
    ), reply.tool_results[0].arguments
    assert "<tool_call>" not in text and text.strip()
