"""The same store tests on both backends: SQLCipher (a file per user) and PostgreSQL with
pgvector (a schema per user, on a real server started by tests/pg.py). What one backend
does, the other must do too; PostgreSQL's own properties (isolation of users in the
database, the HNSW index) are tested after."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

import numpy as np
import pytest

from anima.errors import BadInput, StoreError
from anima.store import Episode, Memory, Turn, open_store


@pytest.fixture
def store(open_user):
    return open_user()


def unit(v) -> list[float]:
    v = np.asarray(v, dtype=np.float64)
    return list(v / np.linalg.norm(v))


# --- episodes and memories ----------------------------------------------------------


def test_episodes_round_trip_in_the_order_asked(store):
    a = store.add_episode(Episode("Hello there", role="user", speaker="Ann", ts="2024-05-01T10:00:00", ref="D1:1"))
    b = store.add_episode(Episode("Hi Ann", role="assistant", ts="2024-05-01T10:00:05"))
    got = store.episodes([b, 999_999, a])
    assert [e.id for e in got] == [b, a]
    assert got[1] == Episode("Hello there", role="user", speaker="Ann", ts="2024-05-01T10:00:00", ref="D1:1", id=a)
    assert store.count_episodes() == 2
    assert store.recent_episode_ids(1) == [b]
    assert [e.id for e in store.episodes_between("2024-05-01T10:00:01", "2024-05-02")] == [b]
    assert store.episodes([]) == []


def test_memories_round_trip_list_and_invalidate(store):
    m = Memory("Ann likes green tea", kind="preference", source_ids=[3, 4], confidence=0.8, ref_date="2024-05-01")
    mid = store.add_memory(m)
    other = store.add_memory(Memory("Ann lives in Lyon"))
    assert store.memories([mid]) == [m]
    assert store.memories([mid])[0].source_ids == [3, 4]
    assert [x.id for x in store.list_memories()] == [mid, other]
    assert [x.id for x in store.list_memories(kind="preference")] == [mid]
    store.invalidate_memory(other, when="2024-06-01T00:00:00")
    assert [x.id for x in store.list_memories()] == [mid]
    assert store.memories([other])[0].valid_to == "2024-06-01T00:00:00"
    assert [x.id for x in store.list_memories(include_invalid=True)] == [mid, other]


def test_add_memories_in_one_go(store):
    store.add_memories([Memory("one"), Memory("two")], [unit([1, 0]), unit([0, 1])])
    assert [m.text for m in store.list_memories()] == ["one", "two"]
    assert store.search_vector("memories", [1, 0.1], 1)[0][0] == store.list_memories()[0].id


def test_a_given_id_is_kept_and_the_next_one_follows_it(store):
    assert store.add_episode(Episode("imported", id=40)) == 40
    assert store.add_episode(Episode("new")) == 41


# --- full-text search ----------------------------------------------------------------


def test_text_search_stems_ors_the_words_and_ranks_more_matches_first(store):
    run = store.add_memory(Memory("Ann is running a marathon in Lyon"))
    both = store.add_memory(Memory("Ann runs to the Lyon market"))
    store.add_memory(Memory("Bob bakes bread"))
    hits = store.search_text("memories", "run Lyon", 10)
    assert [i for i, _ in hits][:1] == [both] and {i for i, _ in hits} == {run, both}
    assert all(s > 0 for _, s in hits) and hits[0][1] >= hits[1][1]
    assert store.search_text("memories", "pizza", 10) == []
    assert store.search_text("memories", "", 10) == [] and store.search_text("memories", "?!", 10) == []


def test_text_search_keeps_stopwords_when_they_are_all_there_is(store):
    the = store.add_memory(Memory("the"))
    store.add_memory(Memory("Lyon"))
    assert [i for i, _ in store.search_text("memories", "the", 5)] == [the]


def test_text_search_takes_operators_and_quotes_as_words(store):
    mid = store.add_memory(Memory("cats AND dogs"))
    for query in ['cats" OR NOT (', "dogs & !cats | x:*", "NEAR(cats dogs)", "'dogs'"]:
        assert [i for i, _ in store.search_text("memories", query, 5)] == [mid], query


def test_episode_index_text_is_what_text_search_sees(store):
    eid = store.add_episode(Episode("see you at nine", speaker="Caroline"), index_text="Caroline: see you at nine")
    assert [i for i, _ in store.search_text("episodes", "caroline", 5)] == [eid]


# --- vector search -----------------------------------------------------------------


def test_vector_search_finds_the_nearest_by_cosine(store):
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(40, 16))
    ids = [store.add_memory(Memory(f"m{i}"), v) for i, v in enumerate(vectors)]
    query = rng.normal(size=16)
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = normed @ (query / np.linalg.norm(query))
    want = [ids[i] for i in np.argsort(-cosine)[:5]]
    hits = store.search_vector("memories", query, 5)
    assert [i for i, _ in hits] == want
    assert [s for _, s in hits] == pytest.approx(sorted(cosine, reverse=True)[:5], abs=1e-5)
    assert len(store.search_vector("memories", query, 100)) == 40


def test_vector_search_before_any_vector_and_with_zero_vectors(store):
    assert store.search_vector("memories", [1.0, 0.0, 0.0], 5) == []
    store.add_memory(Memory("no words"), [0.0, 0.0, 0.0])  # no direction: never found
    mid = store.add_memory(Memory("x"), [1.0, 0.0, 0.0])
    store.add_episode(Episode("no vector at all"))
    assert [i for i, _ in store.search_vector("memories", [1.0, 1.0, 0.0], 5)] == [mid]
    assert store.search_vector("memories", [0.0, 0.0, 0.0], 5) == []
    assert store.search_vector("episodes", [1.0, 0.0, 0.0], 5) == []


def test_another_dimension_is_a_store_error(store):
    store.add_memory(Memory("x"), [1.0, 0.0, 0.0])
    with pytest.raises(StoreError, match="3-d embeddings, not 2-d"):
        store.add_memory(Memory("y"), [1.0, 0.0])
    assert store.meta("embed_dim") == "3"


# --- changes and deletes --------------------------------------------------------------


def test_update_memory_changes_its_text_index_and_vector(store):
    m = Memory("Ann likes tea")
    store.add_memory(m, [1.0, 0.0])
    m.text = "Ann likes coffee"
    store.update_memory(m, [0.0, 1.0])
    assert store.memories([m.id])[0].text == "Ann likes coffee"
    assert store.search_text("memories", "tea", 5) == []
    assert [i for i, _ in store.search_text("memories", "coffee", 5)] == [m.id]
    assert store.search_vector("memories", [0.0, 1.0], 1)[0] == (m.id, pytest.approx(1.0))


def test_delete_removes_the_row_its_words_and_its_vector(store):
    keep = store.add_memory(Memory("keep this memory"), [1.0, 0.0])
    gone = store.add_memory(Memory("forget this memory"), [0.9, 0.1])
    eid = store.add_episode(Episode("forget this message"), [1.0, 0.0])
    assert store.delete_memory(gone) and store.delete_episode(eid)
    assert not store.delete_memory(gone)
    assert store.memories([gone]) == [] and store.episodes([eid]) == []
    assert [i for i, _ in store.search_text("memories", "memory", 5)] == [keep]
    assert [i for i, _ in store.search_vector("memories", [1.0, 0.0], 5)] == [keep]
    assert store.search_text("episodes", "forget", 5) == [] and store.search_vector("episodes", [1.0, 0.0], 5) == []


# --- profile, people, meta, conversations, egress -------------------------------------


def test_profile_memories_rank_name_then_preferences_then_confidence(store):
    store.add_memory(Memory("Ann lives in Lyon", confidence=0.9))
    pref = store.add_memory(Memory("Ann likes tea", kind="preference", confidence=0.5))
    name = store.add_memory(Memory("My name is Ann", confidence=0.4))
    sure = store.add_memory(Memory("Ann works at a bakery", confidence=1.0))
    store.add_memory(Memory("Bob likes jazz", subject="Bob"))  # someone else's: not in the profile
    friend = store.add_memory(Memory("Her friend's name is Bob", subject="Bob", confidence=0.3))
    old = store.add_memory(Memory("Ann likes coffee", kind="preference"))
    store.invalidate_memory(old)
    assert [m.id for m in store.profile_memories(4)] == [name, friend, pref, sure]
    assert sorted(store.person_names()) == ["Bob"]


def test_meta_values(store):
    assert store.meta("x") is None
    store.set_meta("x", "1")
    store.set_meta("x", "2")
    assert store.meta("x") == "2"


def test_turns_are_logged_and_read_back_in_order(store):
    cid = store.new_conversation("assistant")
    for i in range(5):
        store.log_turn(
            Turn(cid, "assistant", "fake", f"q{i}", f"a{i}", prompt_tokens=i, completion_tokens=2 * i, latency_ms=1.5)
        )
    turns = store.turns(cid, limit=3)
    assert [t.user_text for t in turns] == ["q2", "q3", "q4"] and turns[-1].completion_tokens == 8
    assert len(store.turns(cid)) == 5 == store.count_turns()
    assert store.conversations()[0].title == "q0"


def test_egress_log(store):
    store.log_egress("https://api.example", 120, {"email": 2})
    assert store.egress() == [
        {"ts": store.egress()[0]["ts"], "destination": "https://api.example", "chars": 120, "redacted": {"email": 2}}
    ]


def test_replies_are_the_next_message_within_the_hour(store):
    cid = store.new_conversation("assistant")
    q = store.add_episode(Episode("when is lunch?", conversation_id=cid, ts="2024-05-01T10:00:00.000+00:00"))
    a = store.add_episode(Episode("at noon", role="assistant", conversation_id=cid, ts="2024-05-01T10:00:03.000+00:00"))
    late = store.add_episode(Episode("hello?", conversation_id=cid, ts="2024-05-01T13:00:00.000+00:00"))
    replies = store.replies([q, late])
    assert list(replies) == [q] and replies[q].id == a


def test_data_stays_when_reopened(open_user):
    store = open_user("bo")
    mid = store.add_memory(Memory("Bo plays chess"), [1.0, 0.0])
    store.close()
    again = open_user("bo")
    assert again.memories([mid])[0].text == "Bo plays chess"
    assert [i for i, _ in again.search_vector("memories", [1.0, 0.0], 1)] == [mid]


def test_recall_finds_the_memory_that_answers(store):
    from anima.memory.retrieve import recall
    from anima.models.fake import FakeEmbedder

    embedder = FakeEmbedder(dim=64)
    texts = ["Ann's sister is called Maya", "Ann plays the violin", "Ann moved to Lyon in 2021", "Bob likes jazz"]
    for text in texts:
        store.add_memory(Memory(text), embedder.embed([text])[0])
    hits = recall(
        store, embedder, "Where did Ann move?", datetime(2024, 5, 1, tzinfo=timezone.utc), k=2, tables=("memories",)
    )
    assert hits[0].text == "Ann moved to Lyon in 2021"


def test_memory_service_add_edit_forget_export_import(open_user):
    from anima.memory.service import MemoryService
    from anima.models.fake import FakeEmbedder

    ann = MemoryService(open_user("ann"), FakeEmbedder(dim=32))
    ann.store.add_episode(Episode("I have a cat called Miso"))
    tea = ann.add("Ann likes green tea", kind="preference")
    ann.edit(tea.id, text="Ann likes black tea")
    gone = ann.add("Ann is in Paris this week")
    ann.forget(gone.id)
    assert [m.text for m in ann.store.list_memories()] == ["Ann likes black tea"]
    assert ann.recall("what tea does Ann like?")[0].text == "Ann likes black tea"
    exported = ann.export()
    bob = MemoryService(open_user("bob"), FakeEmbedder(dim=32))
    bob.store.add_memory(Memory("Bob's own"))  # takes id 1: the import's id 1 is remapped
    assert bob.import_(exported) == 1
    assert sorted(m.text for m in bob.store.list_memories()) == ["Ann likes black tea", "Bob's own"]
    assert bob.recall("black tea")[0].text == "Ann likes black tea"


def test_users_do_not_see_each_other(open_user):
    ann, bob = open_user("ann"), open_user("bob")
    ann.add_memory(Memory("Ann's secret"), [1.0, 0.0])
    bob.add_memory(Memory("Bob's note"), [0.0, 1.0])
    assert [m.text for m in ann.list_memories()] == ["Ann's secret"]
    assert [m.text for m in bob.list_memories()] == ["Bob's note"]
    assert bob.search_text("memories", "secret", 5) == []


# --- PostgreSQL only ----------------------------------------------------------------


@pytest.fixture
def pg_store(postgres_url):
    from anima.store.pg import PgStore
    from anima.store.pg_db import drop_user

    stores = []

    def open_(user: str):
        stores.append(PgStore(postgres_url, user))
        return stores[-1]

    yield open_
    for s in stores:
        s.close()
    for user in {s.user for s in stores}:
        drop_user(postgres_url, user)


def test_postgres_user_cannot_read_another_users_schema(pg_store):
    import psycopg

    ann, bob = pg_store("pg_ann"), pg_store("pg_bob")
    bob.add_memory(Memory("Bob's secret"))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        ann._read('SELECT text FROM "anima_pg_bob".memories')
    assert ann.db.execute("SELECT current_user AS u").fetchone()["u"] == "anima_pg_ann"


def test_postgres_vector_search_uses_the_hnsw_index(pg_store):
    store = pg_store("pg_hnsw")
    store.add_memory(Memory("x"), [1.0, 0.0, 0.0])
    with store.transaction() as db:
        db.execute("SET LOCAL enable_seqscan = off")  # a tiny table would be scanned otherwise
        plan = db.execute(  # the query search_vector runs
            "EXPLAIN SELECT id, embedding <=> '[1,0,0]'::vector AS d FROM memories"
            " WHERE embedding IS NOT NULL ORDER BY d LIMIT 5"
        ).fetchall()
    assert "memories_embedding" in str(plan)
    indexes = store._read("SELECT indexdef FROM pg_indexes WHERE tablename = 'memories'")
    assert any("hnsw" in r["indexdef"] and "vector_cosine_ops" in r["indexdef"] for r in indexes)
    assert any("gin (tsv)" in r["indexdef"] for r in indexes)


def test_postgres_migrations_are_numbered_and_run_once(pg_store):
    from anima.store.pg_migrations import PG_MIGRATIONS, migrate

    names = [fn.__name__ for fn in PG_MIGRATIONS]
    assert len({n.split("_")[0] for n in names}) == len(names)
    assert all(n.startswith("m") and n.split("_")[0][1:].isdigit() for n in names)
    store = pg_store("pg_mig")
    assert migrate(store.db) == []
    assert [r["name"] for r in store._read("SELECT name FROM _anima_migrations ORDER BY name")] == sorted(names)


def test_postgres_is_chosen_by_store_url(postgres_url, anima_home):
    from anima.app import build
    from anima.config import Config
    from anima.store.pg import PgStore
    from anima.store.pg_db import drop_user

    container = build(Config(store={"url": postgres_url}, user="pg_conf"))
    try:
        assert isinstance(container.store, PgStore) and container.store.schema == "anima_pg_conf"
        assert not (anima_home / "users" / "pg_conf").exists()  # no SQLCipher file was made
    finally:
        container.store.close()
        drop_user(postgres_url, "pg_conf")


def test_postgres_url_is_checked_and_bad_servers_are_store_errors(tmp_path):
    from anima.config import Config

    pytest.importorskip("psycopg", reason="pip install -e '.[postgres]'")
    with pytest.raises(Exception, match="postgresql://"):
        Config(store={"url": "mysql://x"})
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL at"):
        open_store(tmp_path, "ann", url=f"postgresql://anima:secret@/postgres?host={tmp_path}")


@pytest.mark.parametrize("backend", ["sqlcipher", "postgres"])
def test_accounts_add_find_list_and_revoke_keys_on_both_backends(request, anima_home, backend):
    """The API keys: a file in the data dir, or a table in PostgreSQL that servers on
    several machines share (two connections here, as two servers)."""
    from anima.store.accounts import open_accounts

    url = request.getfixturevalue("postgres_url") if backend == "postgres" else ""
    one, two = open_accounts(anima_home, url), open_accounts(anima_home, url)
    name = f"ann{next(_account_names)}"
    assert not one.any_made() or url  # a shared server may hold other tests' keys
    key = one.add(name)
    assert two.user_for(key) == name and two.user_for(key + "x") is None
    other = two.add(name)
    mine = [a for a in one.list() if a.name == name]
    assert sorted(a.key_prefix for a in mine) == sorted([key[:12], other[:12]]) and not any(a.revoked for a in mine)
    assert one.any_active() and two.revoke(key[:12]) == 1 and one.user_for(key) is None
    assert one.user_for(other) == name and one.revoke(name) == 1 and two.user_for(other) is None
    assert all(a.revoked for a in two.list() if a.name == name) and one.any_made()
    with pytest.raises(BadInput):
        one.add("../etc")


_account_names = itertools.count()
