import os

import pytest

from anima.errors import StoreError
from anima.store import Store, Turn
from anima.store.migrations import MIGRATIONS, migrate


def test_migration_names_are_unique_and_numbered():
    names = [fn.__name__ for fn in MIGRATIONS]
    assert len(names) == len(set(names))
    numbers = [n.split("_")[0] for n in names]
    assert len(numbers) == len(set(numbers))
    assert all(n.startswith("m") and n[1:].isdigit() for n in numbers)


def test_migrations_run_once(tmp_path):
    store = Store(tmp_path / "a.db")
    assert migrate(store.db) == []  # all applied when the store opened
    recorded = [r[0] for r in store.db.execute("SELECT name FROM _anima_migrations ORDER BY name")]
    assert recorded == sorted(fn.__name__ for fn in MIGRATIONS)


def test_turns_are_logged_and_read_back_in_order(tmp_path):
    store = Store(tmp_path / "a.db")
    cid = store.new_conversation("assistant")
    for i in range(5):
        store.log_turn(
            Turn(cid, "assistant", "fake", f"q{i}", f"a{i}", prompt_tokens=i, completion_tokens=2 * i, latency_ms=1.5)
        )
    turns = store.turns(cid, limit=3)
    assert [t.user_text for t in turns] == ["q2", "q3", "q4"]
    assert turns[-1].completion_tokens == 8
    assert store.conversations()[0].title == "q0"
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_log_survives_reopen(tmp_path):
    path = tmp_path / "a.db"
    store = Store(path)
    cid = store.new_conversation("assistant")
    store.log_turn(Turn(cid, "assistant", "fake", "hello", "hi"))
    store.close()
    assert [t.reply for t in Store(path).turns(cid)] == ["hi"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_data_dir_is_a_store_error(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="cannot open the database"):
            Store(tmp_path / "sub" / "a.db")
    finally:
        tmp_path.chmod(0o700)


def test_data_dir_that_is_a_file_is_a_store_error(tmp_path):
    (tmp_path / "blocker").write_text("not a folder")
    with pytest.raises(StoreError, match="cannot open the database"):
        Store(tmp_path / "blocker" / "a.db")


def test_garbage_database_file_is_a_store_error_and_is_left_alone(tmp_path):
    path = tmp_path / "a.db"
    path.write_bytes(b"this is not sqlite" * 100)
    before = path.read_bytes()
    with pytest.raises(StoreError):
        Store(path)
    assert path.read_bytes() == before
