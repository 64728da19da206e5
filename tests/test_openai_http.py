"""The openai_http backend against a real HTTP server on loopback; error paths that a
real server can't easily produce use httpx.MockTransport."""

import httpx
import pytest

from anima.errors import ModelNotFound, ModelUnavailable
from anima.models.base import Options, complete
from anima.models.openai_http import OpenAIChatModel, OpenAIEmbedder
from tests.servers import free_port, serve_app, tiny_openai_app


@pytest.fixture(scope="module")
def server():
    app = tiny_openai_app()
    with serve_app(app) as url:
        yield app, url + "/v1"


def test_streams_and_reports_usage(server):
    app, url = server
    model = OpenAIChatModel(url, api_key="sk-test")
    assert model.model == "tiny-1"  # first model the server lists
    chunks = list(
        model.stream([{"role": "user", "content": "hi"}], Options(max_tokens=20, temperature=0, stop=["\n"], seed=3))
    )
    assert "".join(c.text for c in chunks) == "Hello from the tiny server."
    assert len([c for c in chunks if c.text]) == 5  # really streamed, piece by piece
    assert chunks[-1].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (11, 5)
    sent = app.state.requests[-1]
    assert sent["stream"] is True and sent["max_tokens"] == 20 and sent["stop"] == ["\n"] and sent["seed"] == 3


def test_json_schema_is_sent_as_response_format(server):
    app, url = server
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    c = complete(
        OpenAIChatModel(url, "tiny-1", "sk-test"), [{"role": "user", "content": "json"}], Options(json_schema=schema)
    )
    assert c.json() == {"ok": True}
    assert app.state.requests[-1]["response_format"]["json_schema"]["schema"] == schema


def test_embeddings_come_back_in_input_order(server):
    _, url = server
    e = OpenAIEmbedder(url, "tiny-1", "sk-test")
    assert e.dim == 3
    assert [v[0] for v in e.embed(["a", "abc", "ab"])] == [1.0, 3.0, 2.0]


def test_wrong_key_is_model_unavailable(server):
    _, url = server
    with pytest.raises(ModelUnavailable, match="refused the API key"):
        OpenAIChatModel(url, api_key="wrong")


def test_unknown_model_is_model_not_found(server):
    _, url = server
    model = OpenAIChatModel(url, "nope", "sk-test")
    with pytest.raises(ModelNotFound, match="no model 'nope'"):
        complete(model, [{"role": "user", "content": "hi"}])


def test_server_down_is_one_clear_error():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ModelUnavailable, match="cannot reach") as info:
        OpenAIChatModel(url, "m").stream([{"role": "user", "content": "hi"}], Options()).__next__()
    assert "start the server" in info.value.hint


def test_malformed_event_and_server_error_via_mock_transport():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="data: {not json\n\n", headers={"content-type": "text/event-stream"})

    model = OpenAIChatModel("http://x/v1", "m", transport=httpx.MockTransport(handler))
    with pytest.raises(ModelUnavailable, match="malformed event"):
        complete(model, [{"role": "user", "content": "hi"}])

    model = OpenAIChatModel(
        "http://x/v1",
        "m",
        transport=httpx.MockTransport(lambda r: httpx.Response(500, json={"error": {"message": "oops"}})),
    )
    with pytest.raises(ModelUnavailable, match="answered 500: oops"):
        complete(model, [{"role": "user", "content": "hi"}])


def test_timeout_is_model_unavailable():
    def handler(request):
        raise httpx.ReadTimeout("slow", request=request)

    model = OpenAIChatModel("http://x/v1", "m", transport=httpx.MockTransport(handler))
    with pytest.raises(ModelUnavailable, match="did not answer in time"):
        complete(model, [{"role": "user", "content": "hi"}])


def test_json_format_falls_back_to_json_object_schema_once():
    """llama-cpp-python's server refuses OpenAI's json_schema shape but takes
    {"type": "json_object", "schema": ...}; the backend switches and remembers."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        fmt = __import__("json").loads(request.content)["response_format"]
        seen.append(fmt["type"])
        if fmt["type"] == "json_schema":
            return httpx.Response(422, json={"detail": "Input should be 'text' or 'json_object'"})
        assert fmt["schema"] == {"type": "object"}
        return httpx.Response(
            200, text='data: {"choices":[{"delta":{"content":"{}"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
        )

    model = OpenAIChatModel("http://x/v1", "m", transport=httpx.MockTransport(handler))
    for _ in range(2):
        assert (
            complete(model, [{"role": "user", "content": "json"}], Options(json_schema={"type": "object"})).json() == {}
        )
    assert seen == ["json_schema", "json_object", "json_object"]


def test_streamed_tool_calls_become_tool_call_text():
    from anima.tools.calls import split_tool_calls

    events = [
        {
            "choices": [
                {
                    "delta": {
                        "tool_calls": [{"index": 0, "id": "c1", "function": {"name": "get_weather", "arguments": ""}}]
                    }
                }
            ]
        },
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}}]},
        {
            "choices": [
                {
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Rome"}'}}]},
                    "finish_reason": "tool_calls",
                }
            ]
        },
    ]
    body = "".join(f"data: {__import__('json').dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    model = OpenAIChatModel("http://x/v1", "m", transport=httpx.MockTransport(lambda r: httpx.Response(200, text=body)))
    c = complete(
        model,
        [{"role": "user", "content": "weather"}],
        Options(tools=[{"type": "function", "function": {"name": "get_weather"}}]),
    )
    assert split_tool_calls(c.text)[1] == [{"name": "get_weather", "arguments": {"city": "Rome"}}]
    assert c.finish_reason == "tool_calls"


def test_fenced_json_counts_as_a_call_only_for_offered_tools():
    from anima.tools.calls import split_tool_calls

    text = 'Sure:\n```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```'
    assert split_tool_calls(text, {"get_weather"}) == (
        "Sure:",
        [{"name": "get_weather", "arguments": {"city": "Paris"}}],
    )
    assert split_tool_calls(text, {"other"})[1] == [] and split_tool_calls(text)[1] == []
