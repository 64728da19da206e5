"""`anima bench soak` and `anima bench faults`, offline: the fake backend, a real
`anima serve` in its own process, tiny sizes; and each check shown able to fail."""

import json
import os
from datetime import datetime, timezone

import httpx
from typer.testing import CliRunner

from anima.bench import faults, soak
from anima.bench.served import Home
from anima.cli import app
from tests.servers import two_users

runner = CliRunner()


def test_soak_drives_a_real_server_and_reports_every_check():
    result = runner.invoke(
        app, ["bench", "soak", "--backend", "fake", "--minutes", "0.08", "--clients", "3", "--think", "0.2", "--json"]
    )
    data = json.loads(result.stdout)
    assert result.exit_code == (1 if data["failures"] else 0), result.output
    assert data["requests"] > 10 and data["kinds"]["chat_stream"]["2xx"] > 0 and data["kinds"]["web"]["2xx"] > 0
    assert sum(row["requests"] for row in data["kinds"].values()) == data["requests"]
    assert data["server_errors"]["count"] == 0 and data["no_answer"]["count"] == 0, data
    assert data["rate_limited"]["without_retry_after"] == 0 and data["server_exit"] is None
    assert data["rss"]["samples"] >= 2 and data["rss"]["first_mb"] > 10
    assert (
        data["secrets"]["secrets"] == 6 and data["secrets"]["searched_files"] >= 4 and data["secrets"]["hits"] == []
    )  # 2 keys, 2 hashes, 2 store keys
    modes = {m["file"]: m for m in data["key_files"]}
    assert modes["keys/user1.key"]["mode"] == "0600" and "accounts.db" in modes
    assert data["failures"] == [f"{m['file']} is mode {m['mode']}, not 0600" for m in data["key_files"] if not m["ok"]]


def test_soak_counts_5xx_broken_streams_and_429_without_retry_after():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/chat/completions":
            if json.loads(request.content).get("stream"):
                return httpx.Response(200, content=b'data: {"choices": []}\n\n')  # no [DONE]: broken
            return httpx.Response(500, json={"error": {"message": "internal error (id 1234)"}})
        if request.url.path.startswith("/api/memories"):
            return httpx.Response(429, json={"error": {"message": "busy"}})  # no Retry-After
        return httpx.Response(200, json=[])

    calls = soak.drive(
        "http://soak.test", ["k1", "k2"], clients=2, seconds=1.0, think=0.01, transport=httpx.MockTransport(handler)
    )
    result = {**soak.summarise(calls), "secrets": {"hits": []}, "key_files": [], "server_exit": None}
    assert result["server_errors"]["count"] > 0 and result["rate_limited"]["without_retry_after"] > 0
    assert (
        any("broken stream" in e["body"] for e in result["server_errors"]["examples"]) or result["kinds"]["chat"]["5xx"]
    )
    lines = soak.failures(result)
    assert any("server error" in line for line in lines) and any("without Retry-After" in line for line in lines)


def test_a_secret_outside_its_place_and_a_readable_key_file_fail(tmp_path):
    import hashlib

    key, store_key = "anima-secretkey123", "ab" * 32
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ana.key").write_text(store_key + "\n")
    os.chmod(tmp_path / "keys" / "ana.key", 0o644)
    (tmp_path / "accounts.db").write_bytes(
        b"SQLite format 3\0" + hashlib.sha256(key.encode()).hexdigest().encode()
    )  # where the hash belongs
    (tmp_path / "anima-serve.log").write_text(f"INFO request with Bearer {key}\n")
    (tmp_path / "notes.txt").write_text(f"backup of the key: {store_key}\n")
    secrets = soak.secrets_of(Home(tmp_path, {}), {"ana": key})
    searched, hits = soak.find_secrets(tmp_path, secrets)
    assert searched == 4
    assert sorted((h["file"], h["secret"]) for h in hits) == [
        ("anima-serve.log", "API key of ana"),
        ("notes.txt", "store key of ana"),
    ]
    modes = {m["file"]: m for m in soak.key_file_modes(tmp_path)}
    assert modes["keys/ana.key"] == {"file": "keys/ana.key", "mode": "0644", "ok": False}
    result = {
        "server_errors": {"count": 0},
        "no_answer": {"count": 0},
        "rate_limited": {"without_retry_after": 0},
        "secrets": {"hits": hits},
        "key_files": list(modes.values()),
        "server_exit": 3,
    }
    assert set(soak.failures(result)) >= {
        "API key of ana found in anima-serve.log",
        "keys/ana.key is mode 0644, not 0600",
        "the server exited during the run (code 3)",
    }


def test_memory_trend_is_the_slope_of_the_second_half():
    samples = [(t, 100.0) for t in range(0, 60, 5)] + [(t, 100.0 + 2 * (t - 60) / 60) for t in range(60, 121, 5)]
    trend = soak.memory_trend(samples)
    assert trend["first_mb"] == 100.0 and trend["max_mb"] == 102.0 and trend["slope_mb_per_min"] == 2.0


def test_texts_never_repeat():
    texts = soak.Texts()
    made = (
        [texts.question() for _ in range(2000)]
        + [texts.fact() for _ in range(1000)]
        + [" ".join(texts.task()) for _ in range(500)]
    )
    assert len(set(made)) == len(made)


def test_faults_kills_and_restarts_a_real_server_and_loses_nothing():
    result = runner.invoke(app, ["bench", "faults", "--backend", "fake", "--kills", "3", "--max-round", "1", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["failures"] == [], (result.output, data["problems"])
    assert (
        data["kills"] == 3 and len(data["rounds"]) == 3 and len(data["checks"]) == 4
    )  # after each restart and at the end
    assert all(not lines for lines in data["problems"].values())
    assert sum(a["rounds"] for a in data["activities"].values()) >= 3


def test_two_servers_on_one_postgresql_survive_kills_of_either_and_fire_each_job_once(postgres_url):
    """Two real `anima serve` processes on one PostgreSQL, requests spread over both, one of
    them killed with SIGKILL each round while the other serves on: nothing acknowledged is
    lost, no reminder fires or is pushed twice, each store opens through both."""
    result = runner.invoke(
        app,
        ["bench", "faults", "--backend", "fake", "--servers", "2", "--store", postgres_url]
        + ["--kills", "4", "--max-round", "2", "--seed", "3", "--json"],
    )
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["failures"] == [], (result.output, data["problems"])
    assert data["servers"] == 2 and data["store"] == "postgresql" and len(data["checks"]) == 5
    assert {r["server"] for r in data["rounds"]} == {1, 2}  # each was killed at least once
    assert sum(data["acknowledged"].values()) > 0 and all(not lines for lines in data["problems"].values())


def test_pushes_counts_a_notification_pushed_twice():
    pushes = faults.Pushes()
    try:
        for item in ({"id": 1, "kind": "reminder", "title": "a"}, {"id": 2, "kind": "reminder", "title": "b"}):
            httpx.post(pushes.url, json={**item, "created": "t"})
        httpx.post(pushes.url, json={"id": 1, "kind": "reminder", "title": "a", "created": "t"})
    finally:
        pushes.close()
    assert pushes.doubled() == ["reminder 'a' (item 1) pushed 2 times"]


def test_verify_reports_lost_writes_double_fires_and_a_store_that_does_not_answer(anima_home):
    from anima.proactive import inbox

    now = datetime.now(timezone.utc)
    with two_users(anima_home) as (url, keys, server):
        auth = {"Authorization": f"Bearer {keys['alice']}"}
        kept = httpx.post(url + "/api/memories", json={"text": "Ana likes tea"}, headers=auth).json()["id"]
        patched = httpx.post(url + "/api/memories", json={"text": "Tom plays chess"}, headers=auth).json()["id"]
        httpx.patch(url + f"/api/memories/{patched}", json={"text": "Tom plays go"}, headers=auth)
        reply = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "assistant", "messages": [{"role": "user", "content": "hello there"}]},
            headers=auth,
        ).json()
        alice = server.container("alice")
        alice.memory.observe("The code word is qwertyuiop.", "user")
        for key in ("reminder:7@a", "reminder:7@b"):  # one reminder, two items: a double fire
            inbox.add(alice.store, inbox.Item("reminder", "call mum", key=key, data={"reminder_id": 7}), now)

        ledger = faults.Ledger()
        ledger.memories = {
            ("alice", kept): {"Ana likes tea"},
            ("alice", patched): {"Tom plays chess", "Tom plays go"},
            ("alice", 999): {"gone"},
        }
        ledger.reminders = {("alice", 999): "water the plants"}
        ledger.turns = [
            ("alice", reply["anima"]["conversation"], "hello there"),
            ("alice", reply["anima"]["conversation"], "never said"),
        ]
        ledger.ingested = [("alice", "qwertyuiop"), ("alice", "nosuchword")]
        found = faults.verify(url, {"alice": keys["alice"], "bob": "anima-not-a-key"}, ledger)

    assert ledger.memories[("alice", patched)] == {"Tom plays go"}  # the PATCH cut by a kill settles on what is there
    lost = found["lost"]
    assert len(lost) == 4, lost
    assert any("memory 999" in line for line in lost) and any("reminder 999" in line for line in lost)
    assert any("'never said'" in line for line in lost) and any("nosuchword" in line for line in lost)
    assert found["double_fires"] == ["alice: reminder 7 has 2 inbox items"]
    assert len(found["unopened"]) == 1 and found["unopened"][0].startswith("bob: GET /api/memories/export answered 401")
    result = {"problems": {**found, "missed_fires": ["alice: reminder 3 due 10:00:00 never fired"], "memory_list": []}}
    assert faults.failures(result) == [
        "4 acknowledged write(s) lost",
        "1 reminder(s) fired twice",
        "1 reminder(s) never fired",
        "a store did not open 1 time(s)",
    ]


def test_option_minimums_are_usage_errors():
    for args in (
        ["bench", "soak", "--clients", "0"],
        ["bench", "soak", "--minutes", "0"],
        ["bench", "faults", "--kills", "0"],
        ["bench", "faults", "--servers", "0"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Invalid value" in result.output, args
