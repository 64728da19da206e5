"""Calendar (.ics in and out, repeating events, "what's on Thursday?") and local documents
(index, re-index, search with citations): real encrypted store, real files in tmp_path."""

import json
import os
import time
from datetime import date, datetime

import pytest
from typer.testing import CliRunner

from anima.cli import app
from anima.config import load_config
from anima.errors import BadInput
from anima.store import open_store
from anima.tools import Toolbox, ToolContext, calendar, documents
from anima.tools.calendar import add_event, events_between, export_ics, import_ics, whats_on
from anima.tools.documents import chunks, index_folder, search

NOW = datetime(2026, 1, 12, 10, 0)  # a Monday

ICS = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//EN
BEGIN:VEVENT
UID:standup-1
SUMMARY:Standup
DTSTART:20260105T093000
DTEND:20260105T094500
RRULE:FREQ=WEEKLY;BYDAY=MO,TH;UNTIL=20260301T000000Z
EXDATE:20260108T093000
LOCATION:Room 1
END:VEVENT
BEGIN:VEVENT
UID:standup-1
RECURRENCE-ID:20260115T093000
SUMMARY:Standup (moved)
DTSTART:20260115T140000
DTEND:20260115T141500
END:VEVENT
BEGIN:VEVENT
UID:dentist-1
SUMMARY:Dentist
DTSTART:20260115T160000
DURATION:PT30M
LOCATION:Main St 4
END:VEVENT
BEGIN:VEVENT
UID:trip-1
SUMMARY:Lisbon trip
DTSTART;VALUE=DATE:20260116
DTEND;VALUE=DATE:20260119
END:VEVENT
END:VCALENDAR
"""


@pytest.fixture
def ics(tmp_path):
    path = tmp_path / "work.ics"
    path.write_text(ICS.replace("\n", "\r\n"))
    return path


def test_import_expands_weekly_rule_with_exceptions_and_moves(store, ics):
    assert import_ics(store, ics) == 4
    events = events_between(store, datetime(2026, 1, 5), datetime(2026, 1, 20))
    got = [(e["start"], e["title"]) for e in events]
    assert got == [
        ("2026-01-05T09:30", "Standup"),
        # Thursday the 8th is skipped (EXDATE)
        ("2026-01-12T09:30", "Standup"),
        ("2026-01-15T14:00", "Standup (moved)"),  # RECURRENCE-ID replaces the 09:30 one
        ("2026-01-15T16:00", "Dentist"),
        ("2026-01-16T00:00", "Lisbon trip"),
        ("2026-01-19T09:30", "Standup"),
    ]
    assert events[0]["recurring"] and events[0]["location"] == "Room 1" and events[0]["end"] == "2026-01-05T09:45"
    assert events[4]["all_day"] and events[4]["end"] == "2026-01-19T00:00"
    assert events_between(store, datetime(2026, 3, 1), datetime(2026, 3, 31)) == []  # UNTIL ends the rule
    assert import_ics(store, ics) == 4  # the same file again: replaced, not doubled
    assert len(events_between(store, datetime(2026, 1, 5), datetime(2026, 1, 20))) == 6


def test_whats_on_resolves_the_phrase(store, ics):
    import_ics(store, ics)
    assert [e["title"] for e in whats_on(store, "what's on Thursday?", NOW)] == ["Standup (moved)", "Dentist"]
    assert [e["title"] for e in whats_on(store, "Saturday", NOW)] == ["Lisbon trip"]  # inside a 3-day event
    assert [e["title"] for e in whats_on(store, "today", NOW)] == ["Standup"]
    with pytest.raises(BadInput, match="cannot tell which day 'soonish' means"):
        whats_on(store, "soonish", NOW)


def test_export_then_import_round_trips(store, ics, tmp_path, anima_home):
    import_ics(store, ics)
    add_event(store, "Yoga", datetime(2026, 1, 13, 18), rrule="FREQ=WEEKLY;COUNT=3")
    out = tmp_path / "out" / "all.ics"
    out.parent.mkdir()
    assert export_ics(store, out) == 5
    other = open_store(anima_home, "other")
    assert import_ics(other, out) == 5
    window = (datetime(2026, 1, 1), datetime(2026, 2, 28))
    assert events_between(other, *window) == events_between(store, *window)
    assert [e["start"] for e in events_between(other, *window) if e["title"] == "Yoga"] == [
        "2026-01-13T18:00",
        "2026-01-20T18:00",
        "2026-01-27T18:00",
    ]
    other.close()


@pytest.fixture
def local_utc():
    """This machine's local time zone is UTC for the test."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_time_zones_keep_wall_clock_across_dst(store, tmp_path, local_utc):
    path = tmp_path / "tz.ics"
    path.write_text(
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:x\nBEGIN:VEVENT\nUID:b\nSUMMARY:Berlin call\n"
        "DTSTART;TZID=Europe/Berlin:20260323T090000\nDTEND;TZID=Europe/Berlin:20260323T100000\n"
        "RRULE:FREQ=WEEKLY;COUNT=2\nEND:VEVENT\nEND:VCALENDAR\n"
    )
    import_ics(store, path)
    starts = [e["start"] for e in events_between(store, datetime(2026, 3, 20), datetime(2026, 4, 5))]
    assert starts == ["2026-03-23T08:00", "2026-03-30T07:00"]  # 09:00 in Berlin: CET, then CEST


@pytest.mark.parametrize(
    "content, error",
    [
        ("this is not a calendar", "bad.ics is not a valid .ics file"),
        (
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:Lunch\nDTSTART:tomorrow-ish\nEND:VEVENT\nEND:VCALENDAR\n",
            "event 'Lunch' has a bad DTSTART",
        ),
        ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:Lunch\nEND:VEVENT\nEND:VCALENDAR\n", "event 'Lunch'.*DTSTART"),
        (
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:Lunch\nDTSTART:20260101T120000\nRRULE:FREQ=SOMETIMES\nEND:VEVENT\nEND:VCALENDAR\n",
            "bad RRULE",
        ),
        ("BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:Lunch\n", "bad.ics is not a valid .ics file"),
    ],
)
def test_malformed_ics_is_one_clear_error_and_imports_nothing(store, tmp_path, ics, content, error):
    import_ics(store, ics)
    bad = tmp_path / "bad.ics"
    bad.write_text(content)
    with pytest.raises(BadInput, match=error) as info:
        import_ics(store, bad)
    assert "\n" not in str(info.value)
    assert len(events_between(store, datetime(2026, 1, 1), datetime(2026, 12, 31))) > 0  # what was there stays


def test_missing_ics_file(store, tmp_path):
    with pytest.raises(BadInput, match="cannot read .*nope.ics"):
        import_ics(store, tmp_path / "nope.ics")


def test_add_event_checks_its_input(store):
    with pytest.raises(BadInput, match="ends .* before it starts"):
        add_event(store, "x", datetime(2026, 1, 2, 10), datetime(2026, 1, 2, 9))
    with pytest.raises(BadInput, match="bad repeat rule"):
        add_event(store, "x", datetime(2026, 1, 2, 10), rrule="FREQ=NEVER")
    add_event(store, "Holiday", date(2026, 1, 2))
    assert events_between(store, datetime(2026, 1, 2, 12), datetime(2026, 1, 2, 13))[0]["all_day"]


def test_calendar_tools_through_a_toolbox(store, ics):
    import_ics(store, ics)
    box = Toolbox(calendar.tools(ToolContext(store, load_config(), clock=lambda: NOW)))
    on = box.call("calendar_on", {"when": "Thursday"})
    assert on.ok and on.content == "2026-01-15 14:00-14:15 Standup (moved)\n2026-01-15 16:00-16:30 Dentist (Main St 4)"
    assert box.call("calendar_on", {"when": "next Sunday"}).content == "2026-01-16 to 2026-01-18 all day Lisbon trip"
    added = box.call("calendar_add", {"title": "Gym", "when": "Wednesday at 7pm", "minutes": 90, "repeat": "weekly"})
    assert added.ok and added.content == "added 2026-01-14 19:00-20:30 Gym"
    assert "Gym" in box.call("calendar_on", {"when": "2026-01-21"}).content  # repeats weekly
    assert box.call("calendar_add", {"title": "Off", "when": "Friday"}).content == "added 2026-01-16 all day Off"
    assert "nothing in the calendar for 2026-06-01" in box.call("calendar_on", {"when": "2026-06-01"}).content
    bad = [
        box.call("calendar_on", {"when": "whenever"}),
        box.call("calendar_add", {"title": "x", "when": "next month"}),
        box.call("calendar_add", {"title": "x", "when": "Friday", "repeat": "hourly"}),
        box.call("calendar_add", {"title": "x"}),
    ]
    assert [r.ok for r in bad] == [False] * 4
    assert "cannot tell which day" in bad[0].content


# --- documents -----------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "notes"
    (root / "projects").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("secret remote")
    (root / "plan.md").write_text(
        "# Plan\n\nWe move to Lisbon in September.\nThe flat has a balcony.\n\n" + "Budget line.\n" * 3
    )
    (root / "projects" / "garden.txt").write_text("Tomatoes need sun.\n\nWater the basil every morning.\n")
    (root / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    (root / "data.txt").write_bytes(b"looks like text\0but is not")
    (root / "old.txt").write_bytes("Caf\xe9 menu: espresso".encode("latin-1"))
    return root


def test_index_search_and_cite(store, folder):
    report = index_folder(store, folder)
    assert (report.indexed, report.unchanged, report.skipped) == (3, 0, {"binary": 2})
    assert "skipped 2 binary files" in report.summary()
    hits = search(store, "moving to Lisbon", k=3)
    assert hits[0]["cite"] == "notes/plan.md:1-8" and hits[0]["lines"] == "1-8"  # three short paragraphs, one passage
    assert "[Lisbon]" in hits[0]["snippet"] and hits[0]["path"] == str(folder.resolve() / "plan.md")
    assert search(store, "basil")[0]["cite"] == "notes/projects/garden.txt:1-3"
    assert search(store, "espresso")[0]["cite"] == "notes/old.txt:1-1"  # 8-bit text still reads
    assert search(store, "secret remote") == []  # hidden folders are left out


def test_reindex_reads_only_changes_and_drops_deleted_files(store, folder):
    index_folder(store, folder)
    before = {p.name: p.stat().st_mtime for p in folder.rglob("*") if p.is_file()}
    garden = folder / "projects" / "garden.txt"
    garden.write_text("Tomatoes need sun.\n\nPlant the courgettes in May.\n")
    os.utime(garden, (before["garden.txt"] + 5, before["garden.txt"] + 5))
    (folder / "plan.md").unlink()
    report = index_folder(store, folder)
    assert (report.indexed, report.unchanged, report.removed) == (1, 1, 1)
    assert search(store, "courgettes")[0]["cite"].startswith("notes/projects/garden.txt")
    assert search(store, "basil") == [] and search(store, "Lisbon") == []
    assert {p.name: p.stat().st_mtime for p in folder.rglob("*") if p.is_file()}.keys() == before.keys() - {
        "plan.md"
    }  # read-only
    again = index_folder(store, folder)
    assert (again.indexed, again.unchanged, again.removed) == (0, 2, 0)


def test_index_errors(store, tmp_path):
    with pytest.raises(BadInput, match="no such folder"):
        index_folder(store, tmp_path / "missing")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(BadInput, match="is a file, not a folder"):
        index_folder(store, tmp_path / "f.txt")
    with pytest.raises(BadInput, match="no document folders"):
        documents.index_documents(store, [])


def test_chunks_follow_paragraphs_and_line_numbers():
    text = "\n\n".join(f"Paragraph {i} " + "word " * 60 for i in range(6))  # ~320 chars each
    parts = chunks(text, size=800)
    assert [(a, b) for a, b, _ in parts] == [(1, 3), (5, 7), (9, 11)]  # two paragraphs each, blank lines between
    assert all(len(t) <= 800 for _, _, t in parts)
    long_line = chunks("x" * 2000)
    assert [(a, b, len(t)) for a, b, t in long_line] == [(1, 1, 800), (1, 1, 800), (1, 1, 400)]
    assert chunks("") == []


def test_documents_tool(store, folder):
    box = Toolbox(documents.tools(ToolContext(store, load_config())))
    assert "no documents are indexed yet" in box.call("documents_search", {"query": "Lisbon"}).content
    index_folder(store, folder)
    result = box.call("documents_search", {"query": "where do we move"})
    assert result.ok and result.content.startswith("[notes/plan.md:") and "Lisbon" in result.content
    assert not box.call("documents_search", {"query": 3}).ok


# --- CLI ---------------------------------------------------------------------------------------

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def test_cli_calendar(ics, tmp_path):
    assert "imported 4 events" in run("calendar", "import", str(ics)).stdout
    assert "2026-01-05 09:30-09:45 Standup (Room 1)" in run("calendar", "on", "2026-01-05").stdout
    rows = json.loads(run("calendar", "on", "2026-01-15", "--json").stdout)
    assert [r["title"] for r in rows] == ["Standup (moved)", "Dentist"]
    assert "exported 4 events" in run("calendar", "export", str(tmp_path / "x.ics")).stdout
    bad = tmp_path / "bad.ics"
    bad.write_text("garbage")
    result = run("calendar", "import", str(bad))
    assert (
        result.exit_code == 1
        and "bad.ics is not a valid .ics file" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_cli_docs(folder, tmp_path, monkeypatch):
    result = run("docs", "index")
    assert result.exit_code == 1 and "no document folders" in result.stderr
    monkeypatch.setenv("ANIMA_TOOLS__DOCUMENTS", json.dumps([str(folder)]))
    assert "skipped 2 binary files" in run("docs", "index").stdout
    assert "notes/plan.md:" in run("docs", "search", "Lisbon").stdout
    assert json.loads(run("docs", "search", "basil", "--json").stdout)[0]["cite"] == "notes/projects/garden.txt:1-3"
    result = run("docs", "index", str(tmp_path / "nowhere"))
    assert result.exit_code == 1 and "no such folder" in result.stderr
