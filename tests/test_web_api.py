"""What the web page needs from the server, without a browser: the page and its files,
`anima` beside the OpenAI fields (conversation, memories used), /api/settings, /api/audit."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.servers import two_users


@pytest.fixture
def live(anima_home, monkeypatch):
    monkeypatch.setenv("ANIMA_USER", "alice")  # alice runs the server: the `anima audit` reports are hers
    with two_users(anima_home) as live:
        yield live


def test_page_and_static_files_are_served_without_a_cdn(live):
    url, _, _ = live
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "<title>anima</title>" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.split("<body>")[0]  # nothing loaded from elsewhere
    for name in ("app.js", "markdown.js", "app.css"):
        r = httpx.get(url + f"/static/{name}")
        assert r.status_code == 200 and r.text and "cdn" not in r.text.lower()
    assert httpx.get(url + "/static/nope.js").status_code == 404


def test_replies_say_which_memories_they_used_and_continue_a_conversation(live):
    url, keys, server = live
    memory = server.container("alice").memory.add("Alice's sister is called Ana", "person")
    c = openai.OpenAI(base_url=url + "/v1", api_key=keys["alice"], max_retries=0)
    r = c.chat.completions.create(
        model="assistant", messages=[{"role": "user", "content": "what is my sister called?"}]
    )
    anima = r.model_extra["anima"]
    assert {"kind": "memory", "id": memory.id, "text": "Alice's sister is called Ana"}.items() <= anima["memories"][
        0
    ].items()
    first = anima["conversation"]
    chunks = list(
        c.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "and her age?"}],
            stream=True,
            extra_body={"anima": {"conversation": first}},
        )
    )
    assert chunks[0].model_extra["anima"]["conversation"] == first  # the first chunk carries it
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "You said: and her age?"
    turns = httpx.get(url + f"/api/conversations/{first}", headers={"Authorization": f"Bearer {keys['alice']}"}).json()
    assert [t["user_text"] for t in turns] == ["what is my sister called?", "and her age?"]
    with pytest.raises(openai.NotFoundError, match="no conversation"):  # bob's store has no such conversation
        openai.OpenAI(base_url=url + "/v1", api_key=keys["bob"], max_retries=0).chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"anima": {"conversation": first}},
        )


def test_settings_and_audit_reports(live, anima_home):
    url, keys, _ = live
    alice = {"Authorization": f"Bearer {keys['alice']}"}
    assert httpx.get(url + "/api/settings").status_code == 401
    settings = httpx.get(url + "/api/settings", headers=alice).json()
    assert (
        settings["backend"] == "fake"
        and settings["privacy"] == {"remote": False, "redact": True}
        and settings["editable"] is False
    )
    assert httpx.get(url + "/api/audit", headers=alice).json() == []
    (anima_home / "audit" / "run1").mkdir(parents=True)
    (anima_home / "audit" / "run1" / "report.html").write_text("<h1>ASR 3%</h1>")
    (anima_home / "audit" / "notes.txt").write_text("not a report")
    assert [r["name"] for r in httpx.get(url + "/api/audit", headers=alice).json()] == ["run1/report.html"]
    report = httpx.get(url + "/api/audit/run1/report.html", headers=alice)
    assert report.text == "<h1>ASR 3%</h1>" and report.headers["content-security-policy"].startswith("sandbox")
    for bad in ("notes.txt", "..%2Faccounts.db", "run1/../../accounts.db"):
        r = httpx.get(url + f"/api/audit/{bad}", headers=alice)
        assert r.status_code == 404 and r.json()["error"]["message"]  # (httpx resolves the last one to /accounts.db)
