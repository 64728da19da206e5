"""The encrypted store: keys, wrong keys, plain-to-encrypted, full-text and vector search
(the same tests against sqlite-vec and the numpy fallback), hard deletes, kill -9."""

import os
import signal
import stat
import subprocess
import sys

import pytest

from anima.errors import StoreError, WrongPassphrase
from anima.models.fake import FakeEmbedder
from anima.store import Episode, Memory, Store, open_store, user_db_path
from anima.store.db import SQLITE_HEADER
from anima.store.keys import Key, keys_dir

embed = FakeEmbedder(dim=32)


def vec(text):
    return embed.embed([text])[0]


def test_new_store_is_encrypted_with_a_0600_key_file(anima_home):
    store = open_store(anima_home, "alice")
    store.add_episode(Episode("my passport number is X123"), vec("passport"))
    store.close()
    raw = user_db_path(anima_home, "alice").read_bytes()
    assert not raw.startswith(SQLITE_HEADER) and b"passport" not in raw
    key_file = keys_dir() / "alice.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert open_store(anima_home, "alice").count_episodes() == 1  # the same key opens it again


def test_wrong_passphrase_is_a_clear_error_and_leaves_the_file_alone(anima_home, monkeypatch):
    monkeypatch.setenv("ANIMA_PASSPHRASE", "correct horse")
    store = open_store(anima_home, "bob")
    store.add_memory(Memory("likes tea"), vec("likes tea"))
    store.close()
    path = user_db_path(anima_home, "bob")
    before = path.read_bytes()
    monkeypatch.setenv("ANIMA_PASSPHRASE", "wrong horse")
    with pytest.raises(WrongPassphrase, match="wrong key or passphrase"):
        open_store(anima_home, "bob")
    assert path.read_bytes() == before
    monkeypatch.setenv("ANIMA_PASSPHRASE", "correct horse")
    assert [m.text for m in open_store(anima_home, "bob").list_memories()] == ["likes tea"]


def test_a_wrong_passphrase_prints_one_line_and_nothing_from_sqlcipher(anima_home, monkeypatch):
    """In a real process: SQLCipher's C log (two "ERROR CORE" lines) stays quiet."""
    monkeypatch.setenv("ANIMA_PASSPHRASE", "correct horse")
    store = open_store(anima_home, "local")
    store.add_memory(Memory("likes tea"), vec("likes tea"))
    store.close()
    env = {**os.environ, "ANIMA_HOME": str(anima_home), "ANIMA_PASSPHRASE": "wrong horse"}
    proc = subprocess.run(
        [sys.executable, "-m", "anima", "memory", "list"], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 1 and "wrong key or passphrase" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_lost_key_file_is_a_clear_error(anima_home):
    open_store(anima_home, "carol").close()
    (keys_dir() / "carol.key").unlink()
    with pytest.raises(WrongPassphrase, match="no key for the encrypted database"):
        open_store(anima_home, "carol")


def test_plain_database_is_encrypted_in_place_without_loss(anima_home):
    path = user_db_path(anima_home, "dave")
    plain = Store(path)  # no key: plain SQLite, as the first release wrote
    cid = plain.new_conversation("assistant")
    from anima.store import Turn

    plain.log_turn(Turn(cid, "assistant", "m", "hello", "hi"))
    plain.add_episode(Episode("I live in Lisbon"), vec("I live in Lisbon"))
    plain.close()
    assert path.read_bytes().startswith(SQLITE_HEADER)
    store = open_store(anima_home, "dave")
    assert not path.read_bytes().startswith(SQLITE_HEADER)
    assert [t.reply for t in store.turns(cid)] == ["hi"]
    assert store.search_text("episodes", "Lisbon", 5)[0][0] == 1


def test_unencrypted_store_when_configured(anima_home):
    open_store(anima_home, "erin", encrypt=False).close()
    assert user_db_path(anima_home, "erin").read_bytes().startswith(SQLITE_HEADER)


def test_encrypted_file_opened_without_a_key_is_clear(anima_home):
    open_store(anima_home, "frank").close()
    with pytest.raises(StoreError, match="not a readable database"):
        open_store(anima_home, "frank", encrypt=False)


def test_passphrase_key_literal_escapes_quotes(tmp_path):
    store = Store(tmp_path / "q.db", Key("it's a 'test'", raw=False, source="test"))
    store.close()
    assert Store(tmp_path / "q.db", Key("it's a 'test'", raw=False, source="test")).count_episodes() == 0


@pytest.fixture(params=["sqlite-vec", "numpy"])
def store(request, tmp_path):
    return Store(tmp_path / "s.db", Key("k" * 8, raw=False, source="test"), vectors=request.param)


TEXTS = [
    "I adopted a dog named Rex",
    "My sister lives in Berlin",
    "I am training for a marathon",
    "Rex loves the beach",
    "Berlin is cold in winter",
]


def fill(store):
    return [store.add_episode(Episode(t, ts=f"2023-05-0{i + 1}T10:00:00"), vec(t)) for i, t in enumerate(TEXTS)]


def test_full_text_search_ranks_by_bm25(store):
    ids = fill(store)
    hits = store.search_text("episodes", "where does my sister live?", 3)
    assert hits[0][0] == ids[1]
    assert store.search_text("episodes", "***", 3) == []  # no words: no query, no error
    assert {i for i, _ in store.search_text("episodes", 'rex" OR "berlin', 5)} == {
        ids[0],
        ids[1],
        ids[3],
        ids[4],
    }  # quotes are words, not syntax


def test_vector_search_is_exact_and_same_for_both_backends(store):
    ids = fill(store)
    hits = store.search_vector("episodes", vec("dog named Rex"), 5)
    assert hits[0][0] == ids[0] and hits[0][1] > hits[1][1]
    import numpy as np

    q = np.array(vec("dog named Rex"), dtype=np.float32)
    expected = sorted(ids, key=lambda i: -float(np.dot(q, np.array(vec(TEXTS[ids.index(i)]), dtype=np.float32))))
    assert [i for i, _ in hits] == expected


def test_hard_delete_removes_row_text_and_vector(store):
    ids = fill(store)
    assert store.delete_episode(ids[0])
    assert store.episodes([ids[0]]) == []
    assert ids[0] not in [i for i, _ in store.search_text("episodes", "Rex dog", 5)]
    assert ids[0] not in [i for i, _ in store.search_vector("episodes", vec("I adopted a dog named Rex"), 5)]
    assert store.db.execute("SELECT count(*) FROM fts_episodes WHERE rowid = ?", (ids[0],)).fetchone()[0] == 0
    assert not store.delete_episode(ids[0])


def test_memories_edit_invalidate_and_list(store):
    m = Memory("works at Acme", kind="fact", source_ids=[1, 2])
    store.add_memory(m, vec(m.text))
    m.text = "works at Globex"
    store.update_memory(m, vec(m.text))
    assert store.memories([m.id])[0].text == "works at Globex"
    assert store.search_text("memories", "Globex", 3)[0][0] == m.id and store.search_text("memories", "Acme", 3) == []
    store.invalidate_memory(m.id, "2024-01-01")
    assert store.list_memories() == [] and store.list_memories(include_invalid=True)[0].valid_to == "2024-01-01"
    assert store.memories([m.id])[0].source_ids == [1, 2]


def test_vec_index_catches_up_with_rows_written_without_it(tmp_path):
    key = Key("k" * 8, raw=False, source="test")
    numpy_store = Store(tmp_path / "s.db", key, vectors="numpy")
    ids = fill(numpy_store)
    numpy_store.close()
    vec_store = Store(tmp_path / "s.db", key, vectors="sqlite-vec")
    assert vec_store.vectors.name == "sqlite-vec"
    assert vec_store.search_vector("episodes", vec(TEXTS[2]), 1)[0][0] == ids[2]


def test_embedding_dimension_mismatch_is_clear(store):
    fill(store)
    with pytest.raises(StoreError, match="32-d embeddings, not 8-d"):
        store.add_episode(Episode("x"), [1.0] * 8)


WRITER = """
import sys
from pathlib import Path
from anima.store import Store, Turn
from anima.store.keys import Key
store = Store(Path(sys.argv[1]), Key("pw", raw=False, source="t"))
cid = store.new_conversation("assistant")
for i in range(10_000):
    store.log_turn(Turn(cid, "assistant", "m", f"q{i}", f"a{i}"))
    print(i, flush=True)
"""


def run_and_kill(script: str, path, after: int) -> int:
    """Run a writer that prints the index of each write it has acknowledged; kill -9 it
    after `after` of them. Returns the last acknowledged index."""
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    acked = -1
    for line in proc.stdout:
        acked = int(line)
        if acked >= after:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return acked


def test_kill_9_loses_nothing_acknowledged(tmp_path):
    acked = run_and_kill(WRITER, tmp_path / "k.db", 50)
    store = Store(tmp_path / "k.db", Key("pw", raw=False, source="t"))
    assert store.count_turns() >= acked + 1


INGESTER = """
import sys
from pathlib import Path
from anima.memory import MemoryService
from anima.models.fake import FakeEmbedder
from anima.store import Store
from anima.store.keys import Key
memory = MemoryService(Store(Path(sys.argv[1]), Key("pw", raw=False, source="t")), FakeEmbedder())
for i in range(100_000):
    memory.observe(f"message number {i} about topic {i % 17}")
    print(i, flush=True)
"""


def test_kill_9_during_ingestion_loses_no_acknowledged_message(tmp_path):
    acked = run_and_kill(INGESTER, tmp_path / "i.db", 80)
    store = Store(tmp_path / "i.db", Key("pw", raw=False, source="t"))
    n = store.count_episodes()
    assert n >= acked + 1
    assert store.search_text("episodes", f"number {acked}", 1)  # searchable too: FTS row landed with it
    assert store.db.execute("SELECT count(*) FROM fts_episodes").fetchone()[0] == n


def _can_mount() -> bool:
    import shutil

    return (
        bool(shutil.which("unshare"))
        and subprocess.run(
            ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True
        ).returncode
        == 0
    )


@pytest.mark.skipif(not _can_mount(), reason="needs `unshare -m` and mount (root in a container)")
def test_disk_full_is_one_line_and_keeps_what_was_stored(tmp_path):
    import shutil

    anima = shutil.which("anima", path=os.path.dirname(sys.executable))
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = f"""
set -u
mount -t tmpfs -o size=4m tmpfs "{mnt}"
export ANIMA_HOME="{mnt}/home" ANIMA_BACKEND=fake
"{anima}" memory add "first memory" || exit 10
dd if=/dev/zero of="{mnt}/fill" bs=4k count=100000 2>/dev/null
"{anima}" memory add "$(yes filler | head -n 5000 | tr -d '\\n')" 2>"{tmp_path}/err.txt"; echo "rc=$?"
rm "{mnt}/fill"
"{anima}" memory list --json
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert "rc=1" in proc.stdout, proc.stdout + proc.stderr
    err = (tmp_path / "err.txt").read_text()
    assert (
        err.startswith("error:") and "full" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    ), err
    assert '"text": "first memory"' in proc.stdout


def test_text_without_words_has_no_vector_and_breaks_no_search(store):
    ids = fill(store)
    empty = store.add_episode(Episode("!!!"), [0.0] * 32)
    assert store.search_vector("episodes", [0.0] * 32, 5) == []
    hits = store.search_vector("episodes", vec(TEXTS[0]), 10)
    assert empty not in [i for i, _ in hits] and hits[0][0] == ids[0]


def test_databases_and_key_files_are_private_whatever_the_umask(anima_home):
    """accounts.db holds key hashes and prefixes; it was made 0644 under a usual umask."""
    import os
    import stat

    from anima.store import open_store
    from anima.store.accounts import Accounts

    old = os.umask(0o022)
    try:
        accounts = Accounts(anima_home / "accounts.db")
        accounts.add("alice")
        store = open_store(anima_home / "data", "alice")
        store.close()
    finally:
        os.umask(old)
    made = [
        p
        for p in anima_home.rglob("*")
        if p.is_file() and (p.suffix in (".db", ".key") or p.name.endswith(("-wal", "-shm")))
    ]
    assert any(p.name == "accounts.db-wal" for p in made) and any(p.suffix == ".key" for p in made)
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in made} == {p.name: "0o600" for p in made}
    assert not [p for p in anima_home.rglob("*.tmp")]


def test_numpy_index_follows_writes_as_sqlite_vec_does(tmp_path):
    """Random adds, edits and deletes on both backends, searched after each: the same hits,
    and numpy's matrix is kept in step, not read again (only a rollback, a dimension or
    another connection's commit makes it read the table again)."""
    import random

    import numpy as np

    key = Key("k" * 8, raw=False, source="test")
    stores = {b: Store(tmp_path / f"{b}.db", key, vectors=b) for b in ("sqlite-vec", "numpy")}
    rng = np.random.default_rng(0)
    choose = random.Random(0)
    live: dict[str, list[int]] = {b: [] for b in stores}
    for s in stores.values():  # the first search reads an empty table: later adds go into that
        s.add_episode(Episode("sets the dimension"), rng.normal(size=16).tolist())
        assert s.search_vector("memories", [1.0] * 16, 3) == []
    for step in range(300):
        op = choose.choice(["add", "add", "add", "edit", "delete"]) if step > 5 else "add"
        vector = rng.normal(size=16).tolist()
        pick = choose.randrange(10**6)
        for b, s in stores.items():
            if op == "add":
                live[b].append(s.add_memory(Memory(f"m{step}"), vector))
            elif live[b]:
                mid = live[b][pick % len(live[b])]
                if op == "edit":
                    m = s.memories([mid])[0]
                    s.update_memory(m, vector)
                else:
                    s.delete_memory(mid)
                    live[b].remove(mid)
        if step == 20:
            matrix = stores["numpy"].vectors._cache["memories"]
        query = rng.normal(size=16).tolist()
        hits = {b: s.search_vector("memories", query, 7) for b, s in stores.items()}
        assert [i for i, _ in hits["numpy"]] == [i for i, _ in hits["sqlite-vec"]]
        assert np.allclose([d for _, d in hits["numpy"]], [d for _, d in hits["sqlite-vec"]], atol=1e-5)
    assert stores["numpy"].vectors._cache["memories"] is matrix  # 280 writes, never read again
    assert matrix.n == len(live["numpy"])

    numpy_store = stores["numpy"]
    with pytest.raises(RuntimeError):
        with numpy_store.transaction():
            phantom = numpy_store.add_memory(Memory("rolled back"), [1.0] + [0.0] * 15)
            assert numpy_store.search_vector("memories", [1.0] + [0.0] * 15, 1)[0][0] == phantom
            raise RuntimeError
    assert phantom not in [i for i, _ in numpy_store.search_vector("memories", [1.0] + [0.0] * 15, 400)]

    other = Store(tmp_path / "numpy.db", key, vectors="numpy")  # another connection writes
    added = other.add_memory(Memory("from elsewhere"), [0.0, 1.0] + [0.0] * 14)
    other.close()
    assert numpy_store.search_vector("memories", [0.0, 1.0] + [0.0] * 14, 1)[0][0] == added
