"""The store's interface below the tools: transactions, the INSERT/UPDATE builder, the
profile's ranking, and each table's methods."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import asdict

import pytest

from anima.store import Memory
from anima.store.sql import insert, update
from anima.store.store import in_profile, profile_rank


@pytest.fixture
def store(open_user):
    """A user's store on each backend (SQLCipher, and PostgreSQL on a real server)."""
    return open_user()


# --- transactions --------------------------------------------------------------------------


def test_a_transaction_commits_all_or_nothing_and_nested_ones_join_it(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.notes.add("", "milk")
            with store.transaction():  # joins: rolled back with the outer one
                store.goals.add("Run a 10k", "", None, ["5k"])
            raise RuntimeError("boom")
    assert store.notes.latest(10) == [] and store.goals.list() == []
    with store.transaction():
        store.notes.add("", "milk")
        store.notes.add("", "eggs")
    assert [n["text"] for n in store.notes.latest(10)] == ["eggs", "milk"]


def test_a_transaction_holds_the_store_for_its_thread(store):
    inside, release, read = threading.Event(), threading.Event(), []

    def writer():
        with store.transaction():
            store.notes.add("", "first")
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=writer)
    thread.start()
    inside.wait(5)
    reader = threading.Thread(target=lambda: read.append(store.notes.latest(10)))
    reader.start()
    reader.join(0.2)
    assert reader.is_alive()  # waits for the transaction
    release.set()
    thread.join(5)
    reader.join(5)
    assert [n["text"] for n in read[0]] == ["first"]


# --- the builder ---------------------------------------------------------------------------


def test_insert_and_update_build_their_statements_from_a_dict():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, a TEXT, b TEXT)")
    assert insert(db, "t", {"k": "x", "a": "1", "b": "1"}) == 1
    assert insert(db, "t", {"k": "x", "a": "2", "b": "2"}, conflict="k") is None  # kept as it was
    insert(db, "t", {"k": "x", "a": "3", "b": "3"}, conflict="k", replace=["a"])  # only a changes
    assert db.execute("SELECT k, a, b FROM t").fetchall() == [("x", "3", "1")]
    assert update(db, "t", {"b": "4", "a": "4"}, k="x", a="3") == 1  # a column both set and matched
    assert update(db, "t", {"b": "5"}, k="nobody") == 0
    assert db.execute("SELECT a, b FROM t").fetchall() == [("4", "4")]
    with pytest.raises(AssertionError):
        update(db, "t", {"a = a; --": 1}, k="x")


# --- the profile ---------------------------------------------------------------------------


def test_the_profile_shows_names_then_preferences_then_the_surer_then_the_latest():
    def m(text, kind="fact", subject="user", confidence=1.0, updated_at="2024-01-01"):
        return asdict(Memory(text, kind, subject, confidence=confidence, updated_at=updated_at))

    name = m("My name is Ana.", confidence=0.5)
    friend = m("Maya's name is Maya.", subject="Maya")
    tea = m("Likes green tea.", "preference", confidence=0.9)
    coffee = m("Likes coffee.", "preference", confidence=0.9, updated_at="2024-02-01")
    sure, unsure = m("Lives in Porto."), m("Works at Acme.", confidence=0.6)
    maya_tea = m("Maya loves green tea.", "preference", subject="Maya")
    assert [in_profile(x) for x in (name, friend, tea, sure, maya_tea)] == [True, True, True, True, False]
    candidates = [unsure, sure, tea, coffee, name, friend]
    ranked = sorted(candidates, key=profile_rank, reverse=True)
    assert [x["text"] for x in ranked] == [
        "Maya's name is Maya.",
        "My name is Ana.",
        "Likes coffee.",
        "Likes green tea.",
        "Lives in Porto.",
        "Works at Acme.",
    ]


def test_profile_memories_ranks_current_memories_in_python(store):
    for memory in [
        Memory("Works at Acme.", confidence=0.6),
        Memory("Likes green tea.", "preference"),
        Memory("Maya loves coffee.", "preference", "Maya"),
        Memory("My name is Ana.", confidence=0.5),
        Memory("Lived in Lisbon.", valid_to="2024-01-01"),
    ]:
        store.add_memory(memory)
    assert [m.text for m in store.profile_memories(6)] == ["My name is Ana.", "Likes green tea.", "Works at Acme."]
    assert [m.text for m in store.profile_memories(1)] == ["My name is Ana."]


# --- the tables ----------------------------------------------------------------------------


def test_notes_are_added_found_and_deleted(store):
    milk = store.notes.add("shopping", "milk and eggs")
    store.notes.add("", "call the bank")
    assert [(n["id"], n["score"] > 0) for n in store.notes.search("eggs", 5)] == [(milk, True)]
    assert store.notes.search("...", 5) == []  # no words
    assert store.notes.delete(milk) and not store.notes.delete(milk)
    assert [n["text"] for n in store.notes.latest(10)] == ["call the bank"]


def test_goals_keep_their_milestones_in_order(store):
    goal = store.goals.add("Run a marathon", "health", "2026-10-04", ["10 km", "20 km"])
    assert store.goals.add_milestone(goal, "Race") == 3
    store.goals.set_milestone_done(goal, 2)
    store.goals.update(goal, progress=40, status="done")
    got = store.goals.get(goal)
    assert (got["title"], got["due"], got["status"], got["progress"]) == ("Run a marathon", "2026-10-04", "done", 40)
    assert [(s["position"], s["title"], s["done_at"] is not None) for s in got["milestones"]] == [
        (1, "10 km", False),
        (2, "20 km", True),
        (3, "Race", False),
    ]
    undated = store.goals.add("Read more", "", None, [])
    assert [g["id"] for g in store.goals.list()] == [goal, undated]  # undated last
    assert [g["id"] for g in store.goals.list("active")] == [undated]
    assert store.goals.get(99) is None


def test_calendar_events_are_replaced_by_uid_and_keep_their_skipped_dates(store):
    event = {
        "uid": "a@x",
        "title": "Standup",
        "start": "2026-05-14T09:30:00",
        "end": "2026-05-14T10:00:00",
        "tz": None,
        "location": "",
        "description": "",
        "rrule": "FREQ=WEEKLY",
        "exdates": ["2026-05-21T09:30:00"],
    }
    once = {
        **event,
        "uid": "b@x",
        "title": "Dentist",
        "start": "2026-06-01",
        "end": "2026-06-02",
        "rrule": None,
        "exdates": [],
    }
    store.calendar.upsert([event, once])
    store.calendar.upsert([{**event, "title": "Daily standup"}])
    got = [(e["title"], e["exdates"]) for e in store.calendar.all()]
    assert got == [("Daily standup", ["2026-05-21T09:30:00"]), ("Dentist", [])]
    assert [e["uid"] for e in store.calendar.candidates("2026-05-01", "2026-05-31")] == ["a@x"]  # repeating ones always


def test_documents_index_passages_per_file(store):
    store.documents.put("/d/a.md", "/d", 1.0, 10, "d/a.md", [(1, 2, "the tax return is due"), (4, 4, "holiday plans")])
    store.documents.put("/d/a.md", "/d", 2.0, 12, "d/a.md", [(1, 1, "tax return filed")])  # replaces its passages
    store.documents.put("/d/b.md", "/d", 1.0, 5, "d/b.md", [(1, 1, "tax office address")])
    assert store.documents.files() == {"/d/a.md": (2.0, 12), "/d/b.md": (1.0, 5)} and store.documents.count() == 2
    hits = store.documents.search("return", 5)
    assert [(h["cite"], h["line_start"], h["snippet"]) for h in hits] == [("d/a.md", 1, "tax [return] filed")]
    store.documents.remove(["/d/a.md"])
    assert [h["path"] for h in store.documents.search("tax", 5)] == ["/d/b.md"] and store.documents.count() == 1


def test_reminders_inbox_and_jobs(store):
    rid = store.reminders.add("todo", "pay rent", None, None, "2024-05-01T09:00:00+02:00")
    store.reminders.update(rid, status="done", done_at="2024-05-02T09:00:00+02:00")
    assert store.reminders.get(rid)["status"] == "done" and store.reminders.list("todo") == []
    assert [r["id"] for r in store.reminders.list("todo", include_closed=True)] == [rid]
    assert store.reminders.get(99) is None

    item = {
        "kind": "reminder",
        "title": "pay rent",
        "key": "reminder:1",
        "data": {"reminder_id": rid},
        "created": "2024-05-01",
    }
    first = store.inbox.add(item)
    assert store.inbox.add({**item, "title": "again"}) is None  # one item per key
    store.inbox.update(first, status="dismissed")
    assert store.inbox.get(first)["data"] == {"reminder_id": rid} and store.inbox.list("new") == []
    assert [i["title"] for i in store.inbox.list("dismissed", "reminder")] == ["pay rent"]

    store.jobs.save("dates", "2024-05-01T10:00:00", "2024-05-01T09:00:00")
    store.jobs.save("dates", "2024-05-01T11:00:00", None, "boom")  # no last run given: the recorded one stays
    assert store.jobs.next_runs() == {"dates": "2024-05-01T11:00:00"}
    (job,) = store.jobs.all()
    assert (job["next_run"], job["last_run"], job["last_error"]) == (
        "2024-05-01T11:00:00",
        "2024-05-01T09:00:00",
        "boom",
    )


def test_the_learn_queue_hands_each_message_to_one_taker_and_takes_back_a_dead_ones(open_user):
    first, second = open_user("ann"), open_user("ann")  # two processes on one user's store
    for episode in (3, 1, 2):
        first.learn_queue.add(episode, f"message {episode}", "2024-05-01T09:00:00+00:00", "Ann")
    first.learn_queue.add(1, "again", "2024-05-01T09:00:00+00:00", "Ann")  # queued once
    a, b = first.learn_queue.take(lease=600), second.learn_queue.take(lease=600)
    assert (a["episode_id"], a["text"], a["speaker"]) == (1, "message 1", "Ann") and b["episode_id"] == 2
    assert second.learn_queue.take(lease=600)["episode_id"] == 3
    assert first.learn_queue.take(lease=600) is None and first.learn_queue.count() == 3  # all held, none lost
    second.learn_queue.done(2)
    first.learn_queue.release(1)  # given back: taken again
    assert second.learn_queue.take(lease=600)["episode_id"] == 1
    time.sleep(0.01)
    assert first.learn_queue.take(lease=0.005)["episode_id"] == 1  # its lease ran out: a dead process's message
    assert first.learn_queue.count() == 2
