"""Schemathesis against /openapi.json: whatever the schema allows, no 500s.
(Driven through Hypothesis directly: schemathesis' pytest plugin does not load under
pytest 9.)"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from anima.config import load_config
from anima.models.fake import FakeChatModel, FakeEmbedder
from anima.server import Server, create_app
from anima.store.accounts import Accounts


@pytest.fixture
def api_schema(anima_home):
    config = load_config(backend="fake")
    config.memory.learn = False
    server = Server(config, Accounts(anima_home / "accounts.db"), FakeChatModel(), FakeEmbedder())
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(server))


def test_no_server_errors_on_any_operation(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12  # every route is in the schema
    seen: dict[str, set[int]] = {}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
        )
        def check(case):
            response = case.call()
            seen.setdefault(operation.label, set()).add(response.status_code)
            assert response.status_code < 500, f"{operation.label}: {response.status_code} {response.text[:300]}"
            if response.status_code >= 400:
                assert response.json()["error"]["message"]  # errors are OpenAI-shaped JSON

        check()
    assert len(seen) == len(operations)
