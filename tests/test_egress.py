"""Remote models: refused unless allowed; then redacted, restored and logged."""

from __future__ import annotations

import pytest

from anima.app import build
from anima.config import load_config
from anima.errors import ConfigError
from anima.models.base import Options, complete
from anima.models.fake import FakeChatModel
from anima.safety.egress import RedactingModel, check_allowed, is_local


@pytest.mark.parametrize("url, local", [("http://127.0.0.1:8080/v1", True), ("http://localhost:11434/v1", True), ("http://192.168.1.20:8000/v1", True), ("https://8.8.8.8/v1", False)])
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


def test_redacting_model_sends_placeholders_and_restores_them():
    fake = FakeChatModel(["I wrote to [EMAIL_1] and told [PERSON_1] about it."])
    logged = []
    model = RedactingModel(fake, "https://api.example", lambda: ["Anna"], lambda *a: logged.append(a))
    messages = [{"role": "system", "content": "You help."}, {"role": "user", "content": "Email anna@example.com and tell Anna; my card is 4111 1111 1111 1111."}]
    reply = complete(model, messages, Options(max_tokens=50)).text
    sent = fake.calls[0][0][-1]["content"]
    assert "anna@example.com" not in sent and "Anna" not in sent and "4111" not in sent
    assert "[EMAIL_1]" in sent and "[PERSON_1]" in sent and "[CARD_1]" in sent
    assert reply == "I wrote to anna@example.com and told Anna about it."
    assert logged == [("https://api.example", sum(len(m["content"]) for m in fake.calls[0][0]), {"EMAIL": 1, "PERSON": 1, "CARD": 1})]


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
    assert c.store.egress() == [{"ts": c.store.egress()[0]["ts"], "destination": "https://api.example", "chars": 120, "redacted": {"EMAIL": 2}}]
