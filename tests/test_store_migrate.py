"""`anima store migrate --to postgresql://...`: a user's SQLCipher store copied into
PostgreSQL (a real server, tests/pg.py), ids kept, checked, committed only when the check
passes; refused into a schema that holds data, and one line for a bad URL or source."""

from __future__ import annotations

import itertools
import json

import pytest
from typer.testing import CliRunner

from anima.cli import app
from anima.errors import StoreError
from anima.models.fake import FakeEmbedder
from anima.store import Episode, Memory, Turn, open_store
from anima.store.migrate import Check, migrate_to_postgres, same_hits

runner = CliRunner()
_names = itertools.count()
WORDS = "tea lyon violin marathon sister bakery chess garden piano hiking paris coffee dog cat rain".split()


@pytest.fixture
def user(postgres_url, monkeypatch):
    """A new user name on the shared server (the config's `user`), dropped after."""
    from anima.store.pg_db import drop_user

    name = f"mig_{next(_names)}"
    monkeypatch.setenv("ANIMA_USER", name)
    yield name
    drop_user(postgres_url, name)


def fill(anima_home, user: str, n: int = 300) -> dict:
    """A store with n episodes (vectors; a few without), n // 2 memories pointing at them
    (some superseded), conversations with turns, egress and a note; what it holds, read back."""
    store = open_store(anima_home, user)
    embed = FakeEmbedder(dim=32)
    cid = store.new_conversation("assistant")
    for i in range(20):
        store.log_turn(Turn(cid, "assistant", "fake", f"question {i}", f"answer {i}", prompt_tokens=i, latency_ms=1.5))
    episodes = []
    for i in range(n):
        text = f"{WORDS[i % len(WORDS)]} and {WORDS[(i * 7) % len(WORDS)]} on day {i}"
        vector = embed.embed([text])[0] if i % 50 else None
        episodes.append(
            store.add_episode(
                Episode(text, speaker="Ann", conversation_id=cid if i < 40 else None), vector, index_text=f"Ann: {text}"
            )
        )
    for i in range(n // 2):
        text = f"Ann likes {WORDS[i % len(WORDS)]} and {WORDS[(i * 3) % len(WORDS)]}"
        mid = store.add_memory(
            Memory(text, kind="preference", source_ids=episodes[i : i + 2], confidence=0.7), embed.embed([text])[0]
        )
        if i % 10 == 0:
            store.invalidate_memory(mid, when="2024-06-01T00:00:00")
    store.delete_memory(mid)  # a gap: the next id must still follow the largest
    store.log_egress("https://api.example", 120, {"email": 2})
    store.notes.add("shopping", "milk")
    store.reminders.add("reminder", "call mum", "2024-05-09T09:00:00+02:00", None, "2024-05-08T09:00:00+02:00")
    store.documents.put("/d/a.md", "/d", 1.0, 10, "d/a.md", [(1, 2, "the tax return is due"), (4, 4, "holiday plans")])
    held = {
        "episodes": store.episodes(episodes),
        "memories": store.list_memories(include_invalid=True),
        "turns": store.turns(cid),
        "conversations": store.conversations(),
        "egress": store.egress(),
    }
    store.close()
    return held


def read_back(url: str, user: str) -> dict:
    from anima.store.pg import PgStore

    pg = PgStore(url, user)
    try:
        ids = [r["id"] for r in pg._read("SELECT id FROM episodes ORDER BY id")]
        cid = pg.conversations()[0].id if pg.conversations() else 0
        return {
            "episodes": pg.episodes(ids),
            "memories": pg.list_memories(include_invalid=True),
            "turns": pg.turns(cid),
            "conversations": pg.conversations(),
            "egress": pg.egress(),
        }
    finally:
        pg.close()


def test_a_store_is_copied_whole_with_its_ids_and_checked(anima_home, postgres_url, user):
    held = fill(anima_home, user)
    steps = []
    report = migrate_to_postgres(
        anima_home, user, postgres_url, progress=lambda label, done, total: steps.append(label)
    )
    assert report.committed and report.ok
    core = {"conversations": 1, "turns": 20, "episodes": 300, "memories": 149, "egress": 1}
    assert {t: n for t, n in report.rows.items() if n} == {
        **core,
        "notes": 1,
        "reminders": 1,
        "doc_files": 1,
        "doc_passages": 2,
    }
    assert {"episodes", "memories", "index vectors", "check memories"} <= set(steps)
    checks = {c.what: c for c in report.checks}
    assert checks["memories"].postgres == "149" and checks["episodes with a vector"].sqlite == "294"
    assert checks["episodes: vector search, top 10, every row scored"].postgres == "20 the same"
    assert checks["memories: text search finds the row by its text"].postgres == "20 found on both"
    assert read_back(postgres_url, user) == held  # every field, ids and provenance included

    from anima.store.pg import PgStore

    pg = PgStore(postgres_url, user)
    try:  # the other tables: their rows, and their full text made by PostgreSQL
        assert [n["text"] for n in pg.notes.search("milk", 5)] == ["milk"]
        assert [r["text"] for r in pg.reminders.list()] == ["call mum"]
        assert [h["snippet"] for h in pg.documents.search("holiday", 5)] == ["[holiday] plans"]
        assert pg.notes.add("", "eggs") == 2  # the next id follows the copied ones
    finally:
        pg.close()

    from anima.store.pg import PgStore

    pg = PgStore(postgres_url, user)
    try:
        assert pg.meta("embed_dim") == "32"
        last = max(m.id for m in held["memories"])
        assert pg.add_memory(Memory("new"), FakeEmbedder(dim=32).embed(["new"])[0]) == last + 1  # as SQLite would
        assert pg.add_episode(Episode("next")) == 301 and pg.new_conversation("assistant") == 2
        assert [i for i, _ in pg.search_text("episodes", "ann", 3)]  # the speaker in the index text came along
    finally:
        pg.close()


def test_a_schema_that_holds_data_is_refused_and_left_as_it_was(anima_home, postgres_url, user):
    fill(anima_home, user, n=60)
    assert migrate_to_postgres(anima_home, user, postgres_url).committed
    with pytest.raises(
        StoreError,
        match=rf"the PostgreSQL schema anima_{user} at .* already holds data \(1 conversations, 20 turns, 60 episodes",
    ):
        migrate_to_postgres(anima_home, user, postgres_url)
    assert len(read_back(postgres_url, user)["episodes"]) == 60


def test_a_copy_that_fails_its_check_is_rolled_back(anima_home, postgres_url, user, monkeypatch):
    from anima.store import migrate

    fill(anima_home, user, n=60)
    monkeypatch.setattr(
        migrate, "verify", lambda source, target, progress=None: [Check("memories rows", "29", "28", False)]
    )
    report = migrate_to_postgres(anima_home, user, postgres_url)
    assert not report.committed and not report.ok
    assert read_back(postgres_url, user)["episodes"] == []  # nothing kept: a second try may fill it


def test_same_hits_allows_ties_in_any_order_and_a_cut_tie():
    a = [(1, 0.9), (2, 0.8), (3, 0.8), (4, 0.5), (5, 0.4), (6, 0.4)]  # k = 5 of k + 1 hits
    assert same_hits(a, a, 5)
    assert same_hits(a, [(1, 0.9), (3, 0.8), (2, 0.8 + 1e-7), (4, 0.5), (5, 0.4), (6, 0.4)], 5)  # a tie, either order
    assert same_hits(a, [(1, 0.9), (2, 0.8), (3, 0.8), (4, 0.5), (7, 0.4), (5, 0.4)], 5)  # the 5th place cuts a tie
    assert not same_hits(a, [(1, 0.9), (2, 0.8), (3, 0.8), (7, 0.5), (5, 0.4), (6, 0.4)], 5)  # another id
    assert not same_hits(a, [(2, 0.9), (1, 0.8), (3, 0.8), (4, 0.5), (5, 0.4), (6, 0.4)], 5)  # another order
    assert not same_hits(a, [(1, 0.9), (2, 0.8), (3, 0.8), (4, 0.6), (5, 0.4), (6, 0.4)], 5)  # another score
    assert not same_hits(a[:5], a[:4], 5)
    few = [(1, 0.9), (2, 0.4), (3, 0.4)]  # fewer than k + 1: the last run is whole
    assert not same_hits(few, [(1, 0.9), (2, 0.4), (4, 0.4)], 5)


# --- through the CLI --------------------------------------------------------------------


def test_cli_migrates_and_prints_the_check(anima_home, postgres_url, user, monkeypatch):
    from anima.cli import store as cli_store

    monkeypatch.setattr(cli_store.out, "width", 200)
    fill(anima_home, user, n=60)
    result = runner.invoke(app, ["store", "migrate", "--to", postgres_url])
    assert result.exit_code == 0, result.output
    assert "copied to anima_" + user in result.stdout and "60 episodes" in result.stdout
    assert "vector search, top 10, every row scored" in result.stdout and "differs" not in result.stdout
    assert "1 notes" in result.stdout and "2 doc_passages" in result.stdout and "0 inbox" not in result.stdout
    assert "passed" in result.stdout
    again = runner.invoke(app, ["store", "migrate", "--to", postgres_url, "--json"])
    assert again.exit_code == 1 and "already holds data" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_cli_json_report(anima_home, postgres_url, user):
    fill(anima_home, user, n=30)
    result = runner.invoke(app, ["store", "migrate", "--to", postgres_url, "--json"])
    data = json.loads(result.stdout)
    assert data["ok"] and data["committed"] and data["rows"]["episodes"] == 30
    assert all(c["ok"] for c in data["checks"])


@pytest.mark.parametrize(
    "to, message",
    [
        ("postgresql://anima:secret@/postgres?host={tmp}", "error: cannot connect to PostgreSQL at {tmp}/postgres"),
        ("mysql://x", "error: --to must be a postgresql:// URL, not 'mysql'"),
    ],
)
def test_cli_bad_url_is_one_line(anima_home, tmp_path, to, message):
    pytest.importorskip("psycopg", reason="pip install -e '.[postgres]'")
    fill(anima_home, "local", n=5)
    result = runner.invoke(app, ["store", "migrate", "--to", to.format(tmp=tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(message.format(tmp=tmp_path)) and "secret" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_missing_or_unreadable_source_is_one_line(anima_home, monkeypatch):
    result = runner.invoke(app, ["store", "migrate", "--to", "postgresql://anima@/postgres"])
    assert result.exit_code == 1 and result.stderr.startswith("error: no store to migrate:")
    fill(anima_home, "local", n=5)
    monkeypatch.setenv("ANIMA_PASSPHRASE", "not the key")  # taken before the key file
    result = runner.invoke(app, ["store", "migrate", "--to", "postgresql://anima@/postgres"])
    assert result.exit_code == 1 and result.stderr.startswith("error: cannot decrypt")
    assert len(result.stderr.strip().splitlines()) == 1


def test_ivfflat_index_for_the_bench(anima_home, postgres_url, user):
    from anima.store.migrate import copy_store, open_stores

    fill(anima_home, user, n=60)
    with open_stores(anima_home, user, postgres_url) as (source, target):
        report = copy_store(source, target, vector_index="ivfflat")
        assert report.committed and report.ok
        indexes = target._read("SELECT indexdef FROM pg_indexes WHERE indexname = 'episodes_embedding'")
        assert "ivfflat" in indexes[0]["indexdef"] and "lists='1'" in indexes[0]["indexdef"]
        assert target._read("SELECT current_setting('ivfflat.probes') AS p")[0]["p"] == "1"
