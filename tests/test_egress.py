"""Remote models: refused unless allowed; then redacted, restored and logged."""

from __future__ import annotations

import json

import openai
import pytest

from anima.app import build
from anima.config import load_config
from anima.errors import ConfigError
from anima.models.base import Capabilities, Options, complete
from anima.models.fake import FakeChatModel, FakeEmbedder
from anima.safety.egress import RedactingModel, check_allowed, is_local
from anima.tools.calls import split_tool_calls


@pytest.mark.parametrize(
    "url, local",
    [
        ("http://127.0.0.1:8080/v1", True),
        ("http://localhost:11434/v1", True),
        ("http://192.168.1.20:8000/v1", True),
        ("https://8.8.8.8/v1", False),
    ],
)
def test_is_local(url, local):
    assert is_local(url) is local


def test_remote_is_refused_unless_allowed():
    with pytest.raises(ConfigError, match="privacy.remote"):
        check_allowed("https://8.8.8.8/v1", False)
    check_allowed("https://8.8.8.8/v1", True)
    check_allowed("http://127.0.0.1:8080/v1", False)


def test_container_refuses_a_remote_server_by_default():
    c = build(load_config(backend="openai_http", openai_http={"base_url": "https://8.8.8.8/v1"}))
    with pytest.raises(ConfigError, match="outside this machine"):
        c.chat_model


def test_privacy_follows_the_models_capabilities_not_the_backends_name(anima_home):
    """A backend that declares itself remote is refused without privacy.remote, and
    redacted with it, whatever config.backend says: a new remote backend cannot skip it."""
    remote = FakeChatModel(["Told [PERSON_1]."], capabilities=Capabilities(remote="https://api.example/v1"))
    with pytest.raises(ConfigError, match="outside this machine"):
        build(load_config(backend="fake"), chat_model=remote).chat_model
    c = build(load_config(backend="fake", privacy={"remote": True}), chat_model=remote, embedder=FakeEmbedder())
    c.memory.add("Quentin is my brother", kind="person", subject="Quentin")
    assert c.redacts and c.chat_model.capabilities == Capabilities(remote="https://api.example/v1")
    assert (
        complete(c.chat_model, [{"role": "user", "content": "Tell Quentin hi"}], Options(max_tokens=9)).text
        == "Told Quentin."
    )
    assert (
        "Quentin" not in json.dumps(remote.calls[-1][0])
        and c.store.egress()[0]["destination"] == "https://api.example/v1"
    )
    unredacted = build(
        load_config(backend="fake", privacy={"remote": True, "redact": False}),
        chat_model=remote,
        embedder=FakeEmbedder(),
    )
    assert unredacted.chat_model is remote and not unredacted.redacts
    local = FakeChatModel()
    assert build(load_config(backend="fake"), chat_model=local).chat_model is local


def test_redacting_model_sends_placeholders_and_restores_them():
    fake = FakeChatModel(["I wrote to [EMAIL_1] and told [PERSON_1] about it."])
    logged = []
    model = RedactingModel(fake, "https://api.example", lambda: ["Anna"], lambda *a: logged.append(a))
    messages = [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": "Email anna@example.com and tell Anna; my card is 4111 1111 1111 1111."},
    ]
    reply = complete(model, messages, Options(max_tokens=50)).text
    sent = fake.calls[0][0][-1]["content"]
    assert "anna@example.com" not in sent and "Anna" not in sent and "4111" not in sent
    assert "[EMAIL_1]" in sent and "[PERSON_1]" in sent and "[CARD_1]" in sent
    assert reply == "I wrote to anna@example.com and told Anna about it."
    assert logged == [
        (
            "https://api.example",
            len(json.dumps(fake.calls[0][0], ensure_ascii=False)) + 2,
            {"EMAIL": 1, "PERSON": 1, "CARD": 1},
        )
    ]


def test_placeholders_split_across_chunks_are_restored():
    class Chunky(FakeChatModel):
        def stream(self, messages, options):
            from anima.models.base import Chunk

            self.calls.append(messages)
            for piece in ["Hi [PER", "SON_1], see [EMA", "IL_1]", ""]:
                yield Chunk(piece, "stop" if piece == "" else None)

    model = RedactingModel(Chunky(), "x", lambda: ["Bob"])
    out = complete(model, [{"role": "user", "content": "Bob at bob@x.org"}], Options()).text
    assert out == "Hi Bob, see bob@x.org"


def test_egress_is_logged_in_the_store(tmp_path):
    c = build(load_config(backend="fake"))
    c.store.log_egress("https://api.example", 120, {"EMAIL": 2})
    assert c.store.egress() == [
        {"ts": c.store.egress()[0]["ts"], "destination": "https://api.example", "chars": 120, "redacted": {"EMAIL": 2}}
    ]


def test_tool_calls_and_tool_definitions_are_redacted_and_calls_restored():
    """Earlier tool calls' arguments and the tool definitions leave redacted too; a call
    the model writes with a placeholder runs with the original, as valid JSON."""
    call = (
        '<tool_call>{"name": "reminder_add", '
        '"arguments": {"text": "call [PERSON_1] at [PHONE_1]", "when": "tomorrow"}}</tool_call>'
    )
    fake = FakeChatModel([call])
    model = RedactingModel(fake, "https://api.example", lambda: ['Ann "Nan" Lee', "José"])
    messages = [
        {"role": "user", "content": 'Remind me to call Ann "Nan" Lee at +1 415 555 0100'},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {
                        "name": "notes_add",
                        "arguments": '{"text": "Ann \\"Nan\\" Lee, Jos\\u00e9: +1 415 555 0100"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "notes_add", "content": "noted"},
    ]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "contact_lookup",
                "description": 'Look up Ann "Nan" Lee\'s friends',
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]
    reply = complete(model, messages, Options(tools=tools)).text
    sent, options = fake.calls[0]
    assert (
        "415" not in json.dumps(sent)
        and "Nan" not in json.dumps(sent)
        and "Jos" not in json.dumps(sent, ensure_ascii=False)
    )
    assert "[PHONE_1]" in sent[1]["tool_calls"][0]["function"]["arguments"]
    assert "Nan" not in json.dumps(options.tools) and "[PERSON_1]" in options.tools[0]["function"]["description"]
    _, calls = split_tool_calls(reply)
    assert calls == [
        {"name": "reminder_add", "arguments": {"text": 'call Ann "Nan" Lee at +1 415 555 0100', "when": "tomorrow"}}
    ]


def test_each_user_of_a_server_redacts_with_their_own_names_and_logs_in_their_own_store(anima_home):
    """Two users on one server with a remote model: bob's request is redacted with the
    people bob's store knows and logged in bob's store only; alice's names and her
    egress log never meet bob's traffic (they used to: the default user's redaction sat
    under every user's)."""
    from anima.server import Server, create_app
    from anima.store.accounts import Accounts
    from tests.servers import serve_app

    accounts = Accounts(anima_home / "accounts.db")
    keys = {"alice": accounts.add("alice"), "bob": accounts.add("bob")}
    config = load_config(
        backend="openai_http", openai_http={"base_url": "https://8.8.8.8/v1"}, privacy={"remote": True}
    )
    config.memory.learn = False
    remote = FakeChatModel(capabilities=Capabilities(remote="https://8.8.8.8/v1"))
    server = Server(config, accounts, **build(config, chat_model=remote, embedder=FakeEmbedder()).shared())
    alice, bob = server.container("alice"), server.container("bob")
    alice.memory.add("Zora is my sister", kind="person", subject="Zora")
    bob.memory.add("Quentin is my brother", kind="person", subject="Quentin")
    with serve_app(create_app(server)) as url:
        api = openai.OpenAI(base_url=url + "/v1", api_key=keys["bob"], max_retries=0)
        api.chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "Tell Quentin and Zora that dinner is at 8"}]
        )
    sent = json.dumps(remote.calls[-1][0])
    assert "Quentin" not in sent and "[PERSON_1]" in sent  # bob's people are redacted
    assert "Zora" in sent  # alice's are not bob's to know: nothing of hers shapes his request
    assert len(bob.store.egress()) == 1 and bob.store.egress()[0]["destination"] == "https://8.8.8.8/v1"
    assert (
        alice.store.egress() == [] and server.container(config.user).store.egress() == []
    )  # nor the configured user's
