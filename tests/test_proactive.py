"""The scheduler, triggers, gate and inbox on a real encrypted store, with the clock in the
test's hand; restarts close the store and open it again under a new Scheduler."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from anima.config import load_config
from anima.proactive import Job, Scheduler, briefing, gate, inbox
from anima.proactive.inbox import Item
from anima.proactive.notify import Notifier
from anima.proactive.triggers import due_reminders, memory_day
from anima.store import Memory, open_store
from anima.tools import reminders as rm

TZ = timezone(timedelta(hours=2))


def at(day: str, hhmm: str = "12:00") -> datetime:
    return datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=TZ)


class World:
    """One user's store, a clock the test moves, and what got delivered."""

    def __init__(self, home, now: datetime, **settings):
        self.home, self.now, self.delivered = home, now, []
        self.config = load_config()
        for key, value in settings.items():
            setattr(self.config.proactive, key, value)
        self.store = open_store(home, "tester")

    def scheduler(self, **kw) -> Scheduler:
        return Scheduler(self.store, self.config, clock=lambda: self.now, deliver=self.delivered.append, **kw)

    def restart(self) -> Scheduler:
        self.store.close()
        self.store = open_store(self.home, "tester")
        return self.scheduler()

    def kinds(self, kind: str) -> list[Item]:
        return [i for i in inbox.items(self.store, kind=kind)]


@pytest.fixture
def world(anima_home):
    w = World(anima_home, at("2024-05-08", "08:30"), briefing_at="")  # a Wednesday
    yield w
    w.store.close()


def test_a_reminder_fires_once_at_its_minute_and_not_before(world):
    r = rm.add_reminder(world.store, "call mum", "tomorrow at 9", world.now)
    s = world.scheduler()
    for world.now in (at("2024-05-09", "08:58"), at("2024-05-09", "08:59")):
        assert s.tick() == []
    world.now = at("2024-05-09", "09:00")
    (item,) = s.tick()
    assert item.title == "call mum" and item.kind == "reminder" and item.notify == "sent"
    assert "you asked to be reminded at Thu 09 May 09:00" in item.reason and "missed" not in item.reason
    for world.now in (at("2024-05-09", "09:01"), at("2024-05-09", "10:00"), at("2024-05-10", "09:00")):
        assert s.tick() == []
    assert [i.title for i in world.delivered] == ["call mum"]
    assert len(world.kinds("reminder")) == 1 and rm.get(world.store, r.id).fired == r.due


def test_a_repeating_reminder_fires_every_monday(world):
    rm.add_reminder(world.store, "plan the week", "every Monday at 9", world.now)
    s = world.scheduler()
    t = at("2024-05-08", "09:00")
    while t < at("2024-05-31"):  # every 6 hours for three weeks and a bit
        world.now = t
        s.tick()
        t += timedelta(hours=6)
    fired = sorted(world.kinds("reminder"), key=lambda i: i.id)
    assert [i.created[:16] for i in fired] == ["2024-05-13T09:00", "2024-05-20T09:00", "2024-05-27T09:00"]
    assert all(datetime.fromisoformat(i.created).weekday() == 0 for i in fired)
    assert len([i for i in world.delivered if i.kind == "reminder"]) == 3


def test_across_a_restart_nothing_fires_twice_and_missed_work_is_reported(anima_home):
    w = World(anima_home, at("2024-05-13", "07:00"), briefing_at="08:00")  # a Monday
    rm.add_reminder(w.store, "take pills", "at 7:30am", w.now)
    rm.add_reminder(w.store, "call the bank", "at 10am", w.now)
    s = w.scheduler()
    s.tick()
    w.now = at("2024-05-13", "07:30")
    assert [i.title for i in s.tick()] == ["take pills"]
    # anima stops at 07:31 and starts again at 11:00: the bank reminder and the 08:00 briefing were missed
    w.now = at("2024-05-13", "11:00")
    s = w.restart()
    added = {i.kind: i for i in s.tick()}
    assert set(added) == {"reminder", "briefing"}
    assert added["reminder"].title == "call the bank" and "missed while anima was off" in added["reminder"].reason
    assert "late: it was due Mon 13 May 08:00, missed while anima was off" in added["briefing"].reason
    assert sorted(name for name, _ in s.missed) == ["briefing", "goals"]  # the daily jobs
    # and once more: nothing new, nothing delivered twice
    w.now = at("2024-05-13", "11:01")
    assert w.restart().tick() == []
    titles = [i.title for i in w.delivered]
    assert titles.count("take pills") == 1 and titles.count("call the bank") == 1 and len(w.kinds("briefing")) == 1
    w.store.close()


def test_a_repeating_reminder_missed_for_days_fires_once_and_says_so(world):
    r = rm.add_reminder(world.store, "stretch", "every day at 8", world.now)
    world.scheduler().tick()
    world.now = at("2024-05-12", "12:00")  # off since Wednesday
    (item,) = world.restart().tick()
    assert "missed while anima was off, with 3 later time(s) skipped" in item.reason
    assert rm.get(world.store, r.id).due == "2024-05-13T08:00:00+02:00"


def test_a_birthday_in_memory_is_raised_lookahead_days_ahead_once(world):
    world.store.add_memory(
        Memory("Ana's birthday is on 3 December", kind="event", subject="Ana", ref_date="2023-12-03")
    )
    s = world.scheduler()
    world.now = at("2024-11-29", "23:59")  # 4 days before
    s.tick()
    assert world.kinds("date") == []
    world.now = at("2024-11-30", "00:00")  # lookahead_days (3) before
    (item,) = [i for i in s.tick() if i.kind == "date"]
    assert item.title == "In 3 days (Tue 03 Dec): Ana's birthday is on 3 December"
    assert "from your memory #1" in item.reason and "3 days ahead" in item.reason
    assert "a card, a message or a gift" in item.body
    for world.now in (at("2024-12-01", "09:00"), at("2024-12-03", "09:00")):
        s = world.restart()
        s.tick()
    assert len(world.kinds("date")) == 1
    world.now = at("2025-11-30", "10:00")  # next year's birthday is raised again, once
    s = world.restart()
    s.tick()
    s.tick()
    assert sorted(i.key for i in world.kinds("date")) == ["date:1@2024-12-03", "date:1@2025-12-03"]


def test_dates_named_in_a_memory_text():
    m = Memory("Flight to Lisbon on 14 June 2024", created_at="2024-05-01T10:00:00+00:00")
    today = datetime(2024, 6, 12).date()
    assert memory_day(m, today).isoformat() == "2024-06-14"
    assert memory_day(m, datetime(2024, 6, 15).date()) is None  # past, and not yearly
    assert memory_day(Memory("I like tea"), today) is None
    assert memory_day(Memory("We met in May 2020"), today) is None  # a month is not a day
    assert memory_day(Memory("Bob's birthday", ref_date="2023-02-30"), today) is None


def test_quiet_hours_hold_the_notification_but_keep_the_inbox_item(world):
    rm.add_reminder(world.store, "lock the door", "at 11pm", world.now)
    s = world.scheduler()
    world.now = at("2024-05-08", "23:00")
    (item,) = s.tick()
    assert item.notify == "pending" and world.delivered == []
    assert [i.title for i in inbox.list_items(world.store, world.now)] == ["lock the door"]
    world.now = at("2024-05-09", "06:59")
    s.tick()
    assert world.delivered == []
    world.now = at("2024-05-09", "07:00")
    s.tick()
    assert [i.title for i in world.delivered] == ["lock the door"]


def test_the_rate_limit_holds_the_rest_for_later(world):
    world.config.proactive.max_per_hour = 2
    for n in range(5):
        rm.add_reminder(world.store, f"r{n}", "at 10am", world.now)
    s = world.scheduler()
    world.now = at("2024-05-08", "10:00")
    assert len(s.tick()) == 5 and len(world.delivered) == 2
    world.now = at("2024-05-08", "10:30")
    s.tick()
    assert len(world.delivered) == 2
    world.now = at("2024-05-08", "11:00")
    s.tick()
    assert [i.title for i in world.delivered] == ["r0", "r1", "r2", "r3"]


def test_dismissals_teach_the_gate(world):
    s = world.scheduler(jobs=[])

    def suggest(n: int) -> Item:
        return inbox.add(
            world.store, Item("date", f"date {n}", reason="test", key=f"d{n}", relevance=gate.BASE["date"]), world.now
        )

    first = suggest(1)
    s.tick()
    assert [i.title for i in world.delivered] == ["date 1"]
    inbox.dismiss(world.store, first.id, world.now)
    second = suggest(2)
    s.tick()  # one dismissal: relevance 0.3, still pushed
    inbox.dismiss(world.store, second.id, world.now + timedelta(minutes=1))
    third = suggest(3)
    s.tick()  # two in a row: 0.15, kept in the inbox but not pushed
    assert [i.title for i in world.delivered] == ["date 1", "date 2"]
    assert inbox.get(world.store, third.id).notify == "skipped" and inbox.get(world.store, third.id).status == "new"
    assert gate.streak(world.store, "date", world.now) == 2 and gate.streak(world.store, "reminder", world.now) == 0
    inbox.done(world.store, third.id, world.now + timedelta(minutes=2))  # acting on one resets it
    suggest(4)
    s.tick()
    assert world.delivered[-1].title == "date 4"


def test_gate_rules():
    settings = load_config().proactive  # quiet 22:00-07:00, 4 an hour
    item = Item("reminder", "x", created=at("2024-05-08", "12:00").isoformat())
    assert gate.decide(item, at("2024-05-08", "12:00"), settings, 0, 0)[0] == "send"
    assert gate.decide(item, at("2024-05-08", "23:30"), settings, 0, 0) == ("hold", "quiet hours (22:00-07:00)")
    assert gate.decide(item, at("2024-05-08", "12:00"), settings, 4, 0)[0] == "hold"
    assert gate.decide(item, at("2024-05-08", "12:00"), settings, 0, 3)[0] == "skip"
    assert gate.quiet(at("2024-05-08", "13:00"), "12:30-14:00") and not gate.quiet(at("2024-05-08", "13:00"), "")


def test_a_job_that_raises_does_not_stop_the_others(world):
    def boom(store, now, settings, late):
        raise RuntimeError("broken trigger")

    rm.add_reminder(world.store, "still here", "at 10am", world.now)
    s = world.scheduler(
        jobs=[
            Job("boom", boom, every=timedelta(minutes=1)),
            Job("reminders", due_reminders, every=timedelta(minutes=1)),
        ]
    )
    world.now = at("2024-05-08", "10:00")
    assert [i.title for i in s.tick()] == ["still here"]
    state = {j["name"]: j for j in s.jobs_state()}
    assert state["boom"]["last_error"] == "RuntimeError: broken trigger" and state["reminders"]["last_error"] is None
    assert state["boom"]["next_run"] == at("2024-05-08", "10:01").isoformat()  # it will be tried again
    world.now = at("2024-05-08", "10:05")
    s.tick()  # and the loop goes on


def test_a_failed_delivery_is_logged_and_not_retried(world):
    def refuse(item):
        raise ConnectionError("down")

    rm.add_reminder(world.store, "x", "at 10am", world.now)
    s = Scheduler(world.store, world.config, clock=lambda: world.now, deliver=refuse)
    world.now = at("2024-05-08", "10:00")
    (item,) = s.tick()
    assert item.notify == "sent"
    world.now = at("2024-05-08", "10:01")
    assert s.tick() == [] and s.push(world.now) == []


def test_the_background_thread_ticks_and_stops(world):
    rm.add_reminder(world.store, "from the thread", "in 1 hour", world.now)
    world.now += timedelta(hours=1)
    s = world.scheduler(interval=0.05)
    s.start()
    deadline = time.monotonic() + 10
    while not world.delivered and time.monotonic() < deadline:
        time.sleep(0.02)
    s.stop()
    assert [i.title for i in world.delivered] == ["from the thread"]
    assert s._thread is None


def test_snooze_done_dismiss(world):
    r = rm.add_reminder(world.store, "pay rent", "at 10am", world.now)
    s = world.scheduler()
    world.now = at("2024-05-08", "10:00")
    (item,) = s.tick()
    snoozed = inbox.snooze(world.store, item.id, "tomorrow at 9", world.now)
    assert snoozed.status == "snoozed" and snoozed.snooze_until == "2024-05-09T09:00:00+02:00"
    assert inbox.list_items(world.store, world.now) == []
    world.now = at("2024-05-09", "09:00")
    s.tick()  # back as new, and notified again
    assert [i.title for i in inbox.list_items(world.store, world.now)] == ["pay rent"]
    assert [i.title for i in world.delivered] == ["pay rent", "pay rent"]
    assert inbox.done(world.store, item.id, world.now).status == "done"
    assert rm.get(world.store, r.id).status == "done"  # the one-off reminder is closed with it
    with pytest.raises(rm.ToolError, match="in the past"):
        inbox.snooze(world.store, item.id, "yesterday", world.now)
    with pytest.raises(inbox.NotFound, match="no inbox item with id 42"):
        inbox.dismiss(world.store, 42, world.now)


def test_briefing_says_why_for_every_line(world):
    from anima.tools import calendar, goals

    now = at("2024-05-08", "08:00")
    rm.add_reminder(world.store, "dentist call", "at 3pm", now)
    old = rm.add_reminder(world.store, "send invoice", "at 8:30am", at("2024-05-07", "08:00"))
    rm.fire(world.store, rm.get(world.store, old.id), now)
    rm.add_todo(world.store, "buy stamps", now=now)
    world.store.add_memory(Memory("Ana's birthday is on 10 May", kind="event", subject="Ana", ref_date="1990-05-10"))
    goals.add_goal(world.store, "Run a 10k", due="2024-05-12", now=now)
    calendar.add_event(
        world.store, "Standup", datetime(2024, 5, 8, 9, 30), datetime(2024, 5, 8, 10, 0), location="Office"
    )
    item = briefing(world.store, now)
    lines = item.data["lines"]
    assert all(line["reason"] for line in lines)
    texts = {line["section"]: [x["text"] for x in lines if x["section"] == line["section"]] for line in lines}
    assert texts["calendar"] == ["09:30 Standup at Office"]
    assert texts["due"] == ["send invoice (overdue since Tue 07 May 08:30)", "15:00 dentist call"]
    assert texts["todo"] == ["buy stamps"] and texts["goals"] == ["Run a 10k: 0% done, due 2024-05-12"]
    assert texts["dates"] == ["in 2 days: Ana's birthday is on 10 May"]
    assert 'a card, a message or a gift, for "Ana\'s birthday is on 10 May"' in texts["needs"]
    assert "leave in time for Standup at Office (09:30)" in texts["needs"]
    assert "clear or move 1 overdue item(s)" in texts["needs"]
    assert "why: on your calendar today" in item.body and item.title == "Your briefing for Wed 08 May"


def test_goal_checkins_come_weekly(world):
    from anima.tools import goals

    goals.add_goal(world.store, "Learn Portuguese", now=world.now)
    s = world.scheduler()
    for day in range(8, 16):  # Wed 8 May .. Wed 15 May, at 09:00 (the default check-in time)
        world.now = at(f"2024-05-{day:02d}", "09:00")
        s.tick()
    keys = sorted(i.key for i in world.kinds("goal"))
    assert keys == ["goal:1@2024-W19", "goal:1@2024-W20"]
    assert "weekly check-in" in world.kinds("goal")[0].reason


def test_webhook_posts_json_and_logs_egress(world):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200)

    world.config.proactive.webhook = "https://hooks.example/anima"
    notifier = Notifier(world.config.proactive, world.store, httpx.Client(transport=httpx.MockTransport(handler)))
    notifier(Item("reminder", "call mum", "due now", "you asked", id=7))
    assert seen == [
        {"id": 7, "kind": "reminder", "title": "call mum", "body": "due now", "reason": "you asked", "created": ""}
    ]
    assert world.store.egress()[0]["destination"] == "https://hooks.example/anima"
    failing = Notifier(
        world.config.proactive, world.store, httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    )
    failing(Item("reminder", "x", id=8))  # logged, not raised


# --- the API and the CLI ---------------------------------------------------------------------


@pytest.fixture
def live(anima_home):
    """A served app with two users, alice and bob; yields (url, keys, server)."""
    from tests.servers import two_users

    with two_users(anima_home, max_waiting=0) as (url, keys, server):
        yield url, keys, server


def test_a_late_evening_briefing_shows_what_falls_due_in_the_night(world):
    now = at("2024-05-08", "22:30")
    rm.add_reminder(world.store, "pay rent", "in 3 hours", now)
    rm.add_reminder(world.store, "call the bank", "in 13 hours", now)
    due = [x["text"] for x in briefing(world.store, now).data["lines"] if x["section"] == "due"]
    assert due == ["01:30 tomorrow pay rent"]


def test_api_inbox_reminders_and_briefing_per_user(live):
    url, keys, server = live
    alice, bob = ({"Authorization": f"Bearer {keys[n]}"} for n in ("alice", "bob"))
    r = httpx.post(url + "/api/reminders", json={"text": "call mum", "at": "tomorrow at 9"}, headers=alice)
    assert r.status_code == 201 and r.json()["text"] == "call mum" and r.json()["due"]
    bad = httpx.post(url + "/api/reminders", json={"text": "call mum", "at": "yesterday"}, headers=alice)
    assert bad.status_code == 400 and "in the past" in bad.json()["error"]["message"]
    assert [x["text"] for x in httpx.get(url + "/api/reminders", headers=alice).json()] == ["call mum"]
    assert httpx.get(url + "/api/reminders", headers=bob).json() == []
    now = datetime.now().astimezone()
    item = inbox.add(
        server.container("alice").store, Item("reminder", "water the plants", reason="you asked", key="k1"), now
    )
    listed = httpx.get(url + "/api/inbox", headers=alice).json()
    assert [(x["id"], x["title"], x["reason"]) for x in listed] == [(item.id, "water the plants", "you asked")]
    assert httpx.get(url + "/api/inbox", headers=bob).json() == []
    for action in ("done", "dismiss", "snooze"):  # bob cannot touch alice's item
        refused = httpx.post(url + f"/api/inbox/{item.id}/{action}", headers=bob)
        assert refused.status_code == 404 and "no inbox item" in refused.json()["error"]["message"]
    snoozed = httpx.post(url + f"/api/inbox/{item.id}/snooze", json={"until": "in 2 hours"}, headers=alice).json()
    assert snoozed["status"] == "snoozed" and httpx.get(url + "/api/inbox", headers=alice).json() == []
    assert httpx.post(url + f"/api/inbox/{item.id}/done", headers=alice).json()["status"] == "done"
    assert [x["status"] for x in httpx.get(url + "/api/inbox?all=true", headers=alice).json()] == ["done"]
    brief = httpx.get(url + "/api/briefing", headers=alice).json()
    assert brief["title"].startswith("Your briefing for") and all(line["reason"] for line in brief["lines"])
    assert httpx.get(url + "/api/inbox").status_code == 401


def test_cli_remind_todo_inbox_briefing(anima_home, monkeypatch):
    from typer.testing import CliRunner

    from anima.cli import app

    monkeypatch.setenv("ANIMA_BACKEND", "fake")
    run = lambda *args: CliRunner().invoke(app, list(args))
    assert "reminder #1 set for" in run("remind", "call mum", "--at", "tomorrow at 9").stdout
    bad = run("remind", "call mum", "--at", "yesterday")
    assert bad.exit_code == 1 and "in the past" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert "call mum" in run("reminders").stdout
    assert "added to-do #2 buy milk" in run("todo", "add", "buy milk").stdout
    assert [t["text"] for t in json.loads(run("todo", "list", "--json").stdout)] == ["buy milk"]
    assert "done: #2 buy milk" in run("todo", "done", "2").stdout
    assert run("todo", "done", "1").exit_code == 1  # #1 is a reminder, not a to-do
    assert json.loads(run("inbox", "--json").stdout) == []
    assert "the inbox is empty" in run("inbox").stdout
    missing = run("inbox", "dismiss", "5")
    assert missing.exit_code == 1 and "no inbox item with id 5" in missing.stderr
    store = open_store(anima_home, "local")
    inbox.add(store, Item("reminder", "water the plants", reason="you asked", key="k"), datetime.now().astimezone())
    store.close()
    assert "water the plants" in run("inbox").stdout and "you asked" in run("inbox").stdout
    assert "snoozed until" in run("inbox", "snooze", "1", "--until", "in 2 hours").stdout
    assert "the inbox is empty" in run("inbox").stdout
    assert "done: water the plants" in run("inbox", "done", "1").stdout
    assert [i["status"] for i in json.loads(run("inbox", "--all", "--json").stdout)] == ["done"]
    brief = json.loads(run("briefing", "--json").stdout)
    assert (
        brief["title"].startswith("Your briefing for")
        and {"section": "todo", "text": "buy milk", "reason": "an open to-do"} not in brief["lines"]
    )


def test_serve_runs_a_scheduler_per_user(live):
    from anima.server.inbox import start_schedulers

    server = live[2]
    schedulers = start_schedulers(server)
    try:
        assert sorted(s.store.path.parent.name for s in schedulers) == ["alice", "bob"]
        ran = lambda s: {j["name"] for j in s.jobs_state() if j["last_run"]}
        deadline = time.monotonic() + 10
        while not all(ran(s) == {"reminders", "dates"} for s in schedulers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [ran(s) for s in schedulers] == [{"reminders", "dates"}] * 2  # the daily jobs wait for their time
    finally:
        for s in schedulers:
            s.stop()
    assert all(s._thread is None for s in schedulers)


def test_a_job_that_hangs_is_recorded_as_failed_and_the_rest_run_on(world):
    """A hanging job does not hold the scheduler: the tick goes on after its time limit,
    the error is kept, other jobs run, and no second copy starts while it still hangs."""
    import threading

    from anima.proactive.scheduler import Job

    release, starts, ran = threading.Event(), [], []

    def hangs(store, now, settings, late):
        starts.append(now)
        release.wait(30)
        return []

    jobs = [
        Job("hangs", hangs, every=timedelta(minutes=1)),
        Job("fine", lambda *a: ran.append(1) or [], every=timedelta(minutes=1)),
    ]
    s = world.scheduler(jobs=jobs, job_timeout=0.2)
    s.tick()
    state = {j["name"]: j for j in s.jobs_state()}
    assert "did not finish in 0.2 s" in state["hangs"]["last_error"] and ran == [1]
    world.now += timedelta(minutes=1)
    s.tick()
    assert len(starts) == 1 and ran == [1, 1]  # not started again beside the hanging run
    release.set()
    time.sleep(0.2)
    world.now += timedelta(minutes=1)
    s.tick()
    assert len(starts) == 2 and ran == [1, 1, 1]


def test_two_schedulers_on_one_store_run_each_job_and_push_each_item_once(open_user):
    """Two processes' schedulers sharing one user's store (here two connections, ticking
    in two threads over the same minutes): every run of a job and every push happens in
    exactly one of them, on SQLCipher and on PostgreSQL."""
    import threading

    config = load_config()
    config.proactive.briefing_at = ""
    config.proactive.max_per_hour = 1000
    stores = [open_user("ann"), open_user("ann")]  # the same user, two connections
    start = at("2024-05-08", "08:30")
    for minute in range(1, 11):
        rm.add_reminder(
            stores[0], f"task {minute}", (start + timedelta(minutes=minute)).strftime("%Y-%m-%d %H:%M"), start
        )
    runs, delivered, lock = [], [], threading.Lock()

    def count(store, now, settings, late):
        with lock:
            runs.append(now.replace(second=0))
        return []

    def ticker(store):
        jobs = [
            Job("count", count, every=timedelta(minutes=1)),
            Job("reminders", due_reminders, every=timedelta(minutes=1)),
        ]
        s = Scheduler(store, config, deliver=lambda item: delivered.append(item.title), jobs=jobs)
        for minute in range(0, 12):
            for second in (0, 20, 40):  # both tick several times a minute, out of step
                s.tick(start + timedelta(minutes=minute, seconds=second))

    threads = [threading.Thread(target=ticker, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(runs) == [start + timedelta(minutes=m) for m in range(12)]  # each minute's run once
    assert sorted(delivered) == sorted(f"task {m}" for m in range(1, 11))  # each reminder pushed once
    assert len(inbox.items(stores[1], kind="reminder")) == 10
