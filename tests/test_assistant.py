import pytest

from anima.app import build
from anima.config import load_config
from anima.errors import BadInput, ModelUnavailable
from anima.models.base import Options, complete
from anima.models.fake import FakeChatModel, FakeEmbedder


@pytest.fixture
def fake():
    return FakeChatModel()


@pytest.fixture
def container(fake):
    config = load_config(backend="fake")
    config.memory.learn = False  # learning has its own tests; here the script is for replies only
    return build(config, chat_model=fake)


def test_fake_model_scripts_and_records(fake):
    fake.enqueue("hello world", ValueError("boom"))
    c = complete(fake, [{"role": "user", "content": "hi"}])
    assert c.text == "hello world"
    assert c.usage.completion_tokens == 2
    assert fake.calls[0][0] == [{"role": "user", "content": "hi"}]
    with pytest.raises(ValueError):
        complete(fake, [{"role": "user", "content": "hi"}])
    assert complete(fake, [{"role": "user", "content": "ping"}]).text == "You said: ping"


def test_fake_model_respects_max_tokens(fake):
    fake.enqueue("one two three four five")
    c = complete(fake, [{"role": "user", "content": "x"}], Options(max_tokens=2))
    assert c.text == "one two " and c.finish_reason == "length"


def test_fake_embedder_is_deterministic_and_similar_for_shared_words():
    e = FakeEmbedder()
    a, b, c = e.embed(["the cat sat", "the cat sat down", "stock markets fell"])
    assert e.embed(["the cat sat"])[0] == a
    dot = lambda x, y: sum(i * j for i, j in zip(x, y))
    assert dot(a, b) > dot(a, c)
    assert abs(dot(a, a) - 1) < 1e-9


def test_turn_prompt_has_persona_history_and_is_logged(container, fake):
    fake.enqueue("Paris.", "About 2.1 million.")
    first = container.assistant.reply("What is the capital of France?")
    assert first.text() == "Paris."
    second = container.assistant.reply("How many people live there?", conversation_id=first.turn.conversation_id)
    assert second.text() == "About 2.1 million."
    messages = fake.calls[1][0]
    assert messages[0]["role"] == "system" and "anima" in messages[0]["content"]
    assert [m["content"] for m in messages[1:-2] + messages[-1:]] == [
        "What is the capital of France?",
        "Paris.",
        "How many people live there?",
    ]
    assert messages[-2]["role"] == "system" and messages[-2]["content"].startswith(
        "Now: "
    )  # what changes each turn comes last
    logged = container.store.turns(first.turn.conversation_id)
    assert [(t.user_text, t.reply, t.status) for t in logged] == [
        ("What is the capital of France?", "Paris.", "ok"),
        ("How many people live there?", "About 2.1 million.", "ok"),
    ]
    assert logged[0].model == "fake" and logged[0].completion_tokens == 1 and logged[0].latency_ms > 0


def test_persona_changes_system_prompt(container, fake):
    container.assistant.reply("hi", persona="coach").text()
    assert "coach" in fake.calls[0][0][0]["content"]


def test_history_is_limited(container, fake):
    container.config.history_turns = 1
    r = container.assistant.reply("one")
    r.text()
    for text in ("two", "three"):
        container.assistant.reply(text, conversation_id=r.turn.conversation_id).text()
    messages = fake.calls[-1][0]
    assert [m["content"] for m in messages[1:-2] + messages[-1:]] == ["two", "You said: two", "three"]


def test_stopped_reply_is_logged_as_stopped(container, fake):
    fake.enqueue("a long answer that the user stops early")
    reply = container.assistant.reply("talk")
    pieces = iter(reply)
    assert next(pieces) == "a "
    reply.close()
    turn = container.store.turns(reply.turn.conversation_id)[-1]
    assert (turn.status, turn.reply) == ("stopped", "a ")


def test_model_error_is_logged_and_raised(container, fake):
    fake.enqueue(ModelUnavailable("server down"))
    reply = container.assistant.reply("hi")
    with pytest.raises(ModelUnavailable):
        reply.text()
    assert container.store.turns(reply.turn.conversation_id)[-1].status == "error"


@pytest.mark.parametrize("text", ["", "   \n"])
def test_empty_message_is_bad_input(container, text):
    with pytest.raises(BadInput, match="empty"):
        container.assistant.reply(text)


def test_unknown_persona_is_bad_input(container):
    with pytest.raises(BadInput, match="unknown persona 'pirate'"):
        container.assistant.reply("hi", persona="pirate")


def test_user_persona_file_overrides_and_broken_one_is_skipped(container, fake, anima_home):
    folder = anima_home / "personas"
    folder.mkdir(parents=True)
    (folder / "pirate.toml").write_text('name = "pirate"\ndescription = "Arr"\nsystem_prompt = "Talk like a pirate."\n')
    (folder / "broken.toml").write_text("name = ")
    container.assistant.reply("hi", persona="pirate").text()
    assert fake.calls[0][0][0]["content"] == "Talk like a pirate."


def test_latencies_count_from_the_call_so_recall_is_in_them(container, monkeypatch):
    """first_token_ms and latency_ms (in `ask --json`, the log and the benches) include
    the guard and recall, which the user waits for too."""
    import time

    memory = container.assistant.memory
    slow = memory.context

    def recall_slowly(*args, **kwargs):
        time.sleep(0.3)
        return slow(*args, **kwargs)

    monkeypatch.setattr(memory, "context", recall_slowly)
    started = time.perf_counter()
    reply = container.assistant.reply("hello there")
    reply.text()
    total_ms = (time.perf_counter() - started) * 1000
    t = reply.turn
    assert 300 <= t.first_token_ms <= t.latency_ms <= total_ms
