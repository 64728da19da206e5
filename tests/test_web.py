"""The web page end to end, in real headless Chromium (Selenium with Debian's chromium and
chromium-driver; `scripts/browser-deps.sh` installs them, `make test` runs it): log in,
chat with a streamed reply, forget a memory the reply used, dismiss an inbox item, and
the same page on a phone-sized screen. Screenshots go to test-artifacts/."""

from __future__ import annotations

import shutil
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from anima.config import load_config
from anima.models.fake import FakeChatModel, FakeEmbedder
from anima.proactive import inbox
from anima.proactive.inbox import Item
from anima.server import Server, create_app
from anima.store.accounts import Accounts
from tests.servers import serve_app

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


class SlowModel(FakeChatModel):
    """The fake model, a word every `delay` seconds: slow enough to watch it stream."""

    delay = 0.05

    def stream(self, messages, options):
        for chunk in super().stream(messages, options):
            time.sleep(self.delay)
            yield chunk


@pytest.fixture(scope="module")
def driver():
    missing = [name for name in ("chromium", "chromedriver") if not shutil.which(name)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: run scripts/browser-deps.sh (make test does)", pytrace=False)
    try:
        from selenium import webdriver
    except ImportError:
        pytest.fail("selenium is not installed: pip install -e '.[dev]'", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,850"):
        options.add_argument(arg)
    browser = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    )
    browser.set_script_timeout(10)
    yield browser
    browser.quit()


@pytest.fixture
def site(anima_home):
    """A live server with the slow fake model and one user, alice, who runs it (audit
    reports are hers); yields (url, key, server, model)."""
    accounts = Accounts(anima_home / "accounts.db")
    key = accounts.add("alice")
    config = load_config(backend="fake", user="alice")
    config.memory.learn = False
    model = SlowModel()
    server = Server(config, accounts, model, FakeEmbedder(), max_waiting=2)
    with serve_app(create_app(server)) as url:
        yield url, key, server, model


def shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait(driver, condition, timeout: float = 10):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.02).until(condition)


def by_id(driver, id_: str):
    return driver.find_element("id", id_)


def log_in(driver, url: str, key: str) -> None:
    driver.get(url + "/")
    wait(driver, lambda d: by_id(d, "api-key").is_displayed())
    by_id(driver, "api-key").send_keys(key)
    by_id(driver, "login-form").submit()
    wait(driver, lambda d: by_id(d, "app").is_displayed() and d.find_elements("css selector", "#persona option"))


def send(driver, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    by_id(driver, "message").send_keys(text, Keys.ENTER)  # Enter sends


def replies(driver) -> list:
    return driver.find_elements("css selector", "#messages .message.assistant")


def api(url: str, key: str):
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})


def test_log_in_and_chat_with_a_streamed_reply(driver, site):
    url, key, server, model = site
    driver.get(url + "/")
    wait(driver, lambda d: by_id(d, "api-key").is_displayed())
    by_id(driver, "api-key").send_keys("anima-not-a-key")
    by_id(driver, "login-form").submit()
    wait(driver, lambda d: "not accepted" in by_id(d, "login-error").text)
    assert not by_id(driver, "app").is_displayed()
    shot(driver, "01-login-refused")

    log_in(driver, url, key)
    assert key not in driver.current_url
    assert driver.execute_script("return sessionStorage.getItem('anima.key')") == key
    assert "coach" in [o.text for o in driver.find_elements("css selector", "#persona option")]

    model.enqueue(
        "Here is **bold**, *italic* and `code`:\n\n- one\n- two\n\n```python\nprint('hi')\n```\n\n<b>not html</b> "
        + " ".join(f"w{i}" for i in range(40))
    )
    send(driver, "show me some markdown")
    # mid-stream: some words are there, not all, and Stop is on
    wait(driver, lambda d: replies(d) and "w3" in replies(d)[0].text)
    assert "w39" not in replies(driver)[0].text and by_id(driver, "stop").is_enabled()
    shot(driver, "02-streaming")
    wait(driver, lambda d: "w39" in replies(d)[0].text and by_id(d, "send").is_enabled())
    reply = replies(driver)[0]
    assert reply.find_element("css selector", "strong").text == "bold"
    assert reply.find_element("css selector", "em").text == "italic"
    assert [li.text for li in reply.find_elements("css selector", "ul li")] == ["one", "two"]
    assert reply.find_element("css selector", "pre code").text == "print('hi')"
    assert "<b>not html</b>" in reply.text and not reply.find_elements("css selector", ".body b")  # shown, not run
    shot(driver, "03-reply")

    # the conversation is listed; a second message continues it, with the first as history
    wait(driver, lambda d: "show me some markdown" in by_id(d, "conversation-list").text)
    send(driver, "and again")
    wait(
        driver,
        lambda d: (
            len(replies(d)) == 2 and "You said: and again" in replies(d)[1].text and by_id(d, "send").is_enabled()
        ),
    )
    assert "show me some markdown" in str(model.calls[-1][0])
    conversations = api(url, key).get("/api/conversations").json()
    assert (
        len(conversations) == 1 and len(api(url, key).get(f"/api/conversations/{conversations[0]['id']}").json()) == 2
    )

    # New chat, then back to the old one from the list
    by_id(driver, "new-chat").click()
    assert not replies(driver)
    driver.find_element("css selector", "#conversation-list button").click()
    wait(driver, lambda d: len(replies(d)) == 2)


def test_stop_button_ends_the_reply(driver, site):
    url, key, server, model = site
    log_in(driver, url, key)
    model.enqueue(" ".join(f"word{i}" for i in range(400)))
    send(driver, "talk for a long time")
    wait(driver, lambda d: replies(d) and "word5" in replies(d)[0].text)
    by_id(driver, "stop").click()
    wait(driver, lambda d: "Stopped." in replies(d)[0].text and by_id(d, "send").is_enabled())
    assert "word399" not in replies(driver)[0].text
    deadline = time.time() + 10  # the server notices the closed connection and logs what was said
    while time.time() < deadline:
        found = [
            api(url, key).get(f"/api/conversations/{c['id']}") for c in api(url, key).get("/api/conversations").json()
        ]
        turns = [t for r in found if r.status_code == 200 for t in r.json()]  # 404 until the turn is logged
        if turns and turns[0]["status"] == "stopped":
            break
        time.sleep(0.1)
    assert turns[0]["status"] == "stopped" and "word399" not in turns[0]["reply"]


def test_a_used_memory_is_shown_and_forgotten(driver, site):
    url, key, server, model = site
    memory = server.container("alice").memory.add("Alice's sister is called Ana", "person")
    server.container("alice").memory.add("Alice likes green tea", "preference")
    log_in(driver, url, key)
    send(driver, "what is my sister called?")
    wait(
        driver,
        lambda d: (
            replies(d)
            and d.find_elements("css selector", ".message.assistant details.used")
            and by_id(d, "send").is_enabled()
        ),
    )
    used = replies(driver)[0].find_element("css selector", "details.used")
    used.find_element("tag name", "summary").click()
    assert "Alice's sister is called Ana" in used.text
    shot(driver, "04-memories-used")
    used.find_element("css selector", 'button[aria-label="Forget: Alice\'s sister is called Ana"]').click()
    wait(driver, lambda d: "Forgotten" in by_id(d, "status").text)
    shot(driver, "05-memory-forgotten")
    texts = [m["text"] for m in api(url, key).get("/api/memories").json()]
    assert texts == ["Alice likes green tea"] and memory.id not in [
        m["id"] for m in api(url, key).get("/api/memories").json()
    ]

    driver.find_element("css selector", "nav [data-tab=memories]").click()
    wait(driver, lambda d: "Alice likes green tea" in by_id(d, "memory-list").text)
    assert "sister" not in by_id(driver, "memory-list").text
    shot(driver, "06-memories-tab")

    # why, edit, search, forget from the Memories tab
    card = driver.find_element("css selector", "#memory-list .card")
    card.find_element("xpath", ".//button[text()='Why do you know this?']").click()
    wait(driver, lambda d: "added by hand" in d.find_element("css selector", "#memory-list .why").text)
    card.find_element("xpath", ".//button[text()='Edit']").click()
    box = wait(driver, lambda d: d.find_element("css selector", "#memory-list textarea"))
    box.clear()
    box.send_keys("Alice likes jasmine tea")
    driver.find_element("xpath", "//form[@class='edit']//button[text()='Save']").click()
    wait(driver, lambda d: "jasmine" in by_id(d, "memory-list").text)
    assert [m["text"] for m in api(url, key).get("/api/memories").json()] == ["Alice likes jasmine tea"]
    by_id(driver, "memory-q").send_keys("jasmine")
    by_id(driver, "memory-search").submit()
    wait(driver, lambda d: 'found for "jasmine"' in by_id(d, "status").text)
    driver.find_element("xpath", "//ul[@id='memory-list']//button[text()='Forget']").click()
    wait(driver, lambda d: "Forgotten: Alice likes jasmine tea" in by_id(d, "status").text)
    assert api(url, key).get("/api/memories").json() == []


def test_inbox_item_is_dismissed(driver, site):
    url, key, server, model = site
    store = server.container("alice").store
    now = datetime.now().astimezone()
    water = inbox.add(
        store, Item("reminder", "water the plants", body="The basil too.", reason="you asked on Monday", key="k1"), now
    )
    inbox.add(store, Item("date", "Ana's birthday is on Friday", reason="you told me in March", key="k2"), now)
    assert api(url, key).post("/api/reminders", json={"text": "pay rent", "at": "in 3 hours"}).status_code == 201
    log_in(driver, url, key)
    wait(driver, lambda d: by_id(d, "inbox-count").text == "2")
    driver.find_element("css selector", "nav [data-tab=inbox]").click()
    wait(
        driver,
        lambda d: (
            "water the plants" in by_id(d, "inbox-list").text and "Your briefing for" in by_id(d, "briefing").text
        ),
    )
    assert (
        "Why: you asked on Monday" in by_id(driver, "inbox-list").text
        and "null" not in by_id(driver, "inbox-list").text
    )
    assert "pay rent" in by_id(driver, "briefing").text and "why:" in by_id(driver, "briefing").text
    shot(driver, "07-inbox")
    driver.find_element("css selector", "button[aria-label='Dismiss: water the plants']").click()
    wait(driver, lambda d: "water the plants" not in by_id(d, "inbox-list").text)
    assert by_id(driver, "inbox-count").text == "1"
    statuses = {i["title"]: i["status"] for i in api(url, key).get("/api/inbox?all=true").json()}
    assert statuses == {"water the plants": "dismissed", "Ana's birthday is on Friday": "new"}
    assert inbox.get(store, water.id).status == "dismissed"

    by_id(driver, "reminder-text").send_keys("call mum")
    by_id(driver, "reminder-at").send_keys("tomorrow at 9")
    by_id(driver, "reminder-form").submit()
    wait(driver, lambda d: "call mum" in by_id(d, "reminder-list").text)
    assert [r["text"] for r in api(url, key).get("/api/reminders").json()] == ["pay rent", "call mum"]


def test_audit_and_settings_tabs(driver, site, anima_home):
    url, key, server, model = site
    (anima_home / "audit").mkdir(parents=True)
    chart = (
        '<svg width="200" height="60" role="img" aria-label="attack success">'
        '<rect width="120" height="40" fill="#c33"/></svg>'
    )
    (anima_home / "audit" / "2024-05-01-report.html").write_text(
        f"<html><body><h1>Audit report</h1><p>Attack success rate 12%</p>{chart}"
        "<script>parent.document.title='owned'</script></body></html>"
    )
    log_in(driver, url, key)
    driver.find_element("css selector", "nav [data-tab=audit]").click()
    wait(driver, lambda d: "2024-05-01-report.html" in by_id(d, "audit-list").text)
    driver.find_element("xpath", "//ul[@id='audit-list']//button").click()
    frame = wait(driver, lambda d: by_id(d, "audit-frame") if by_id(d, "audit-frame").is_displayed() else None)
    driver.switch_to.frame(frame)
    wait(driver, lambda d: "Attack success rate 12%" in d.find_element("tag name", "body").text)
    assert driver.find_elements("css selector", "svg rect")
    driver.switch_to.default_content()
    assert driver.title == "anima"  # the report's script did not run
    shot(driver, "08-audit")
    assert api(url, key).get("/api/audit/..%2Faccounts.db").status_code == 404

    driver.find_element("css selector", "nav [data-tab=settings]").click()
    wait(driver, lambda d: "fake" in by_id(d, "settings").text)
    text = by_id(driver, "settings").text
    assert "local only" in text and "22:00-07:00" in text and "Read-only" in by_id(driver, "tab-settings").text
    shot(driver, "09-settings")


def test_phone_screen_and_labels(driver, site):
    url, key, server, model = site
    server.container("alice").memory.add("Alice's sister is called Ana", "person")
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True}
    )
    try:
        log_in(driver, url, key)
        send(driver, "what is my sister called? " + "a-very-long-unbroken-word-" * 6)
        wait(driver, lambda d: replies(d) and "You said" in replies(d)[0].text and by_id(d, "send").is_enabled())
        wait(driver, lambda d: "what is my sister called?" in by_id(d, "conversation-list").text)
        time.sleep(0.2)  # the reply scrolls back into view after the list grows
        replies(driver)[0].find_element("tag name", "summary").click()
        shot(driver, "10-phone-chat")
        for tab in ("chat", "memories", "inbox", "settings"):
            driver.find_element("css selector", f"nav [data-tab={tab}]").click()
            time.sleep(0.3)
            width = driver.execute_script("return document.documentElement.scrollWidth")
            assert width <= 375, f"{tab}: the page is {width}px wide on a 375px screen"
        driver.find_element("css selector", "nav [data-tab=memories]").click()
        wait(driver, lambda d: "sister" in by_id(d, "memory-list").text)
        shot(driver, "11-phone-memories")
        # every visible control has a label or an accessible name
        unlabelled = driver.execute_script(
            """return [...document.querySelectorAll('input, select, textarea, button')]
                 .filter(e => e.offsetParent !== null)
                 .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
                 .map(e => e.outerHTML);"""
        )
        assert unlabelled == []
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
