"""The HTTP API fuzzed from the OpenAPI schema the server itself serves (schemathesis): no request the schema allows or
forbids gets a 500. Slow (hundreds of requests, each decoded): ``pytest -m slow tests/serve/test_protocol_fuzz.py``."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from tests.serve.test_server import Server

schemathesis = pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def live():
    server = Server()  # a request without max_tokens decodes at most 16 tokens (its engine's default_max_tokens)
    yield server
    server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["positive", "negative"])  # requests the schema allows, and requests it forbids
def test_no_request_gets_a_server_error(live, mode):
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} >= {"POST /v1/chat/completions", "GET /v1/models"}
    sent: dict[str, int] = {}
    for operation in operations:
        @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(GenerationMode(mode)))
        def no_500(case):
            if isinstance(case.body, dict):
                for key in ("max_tokens", "max_completion_tokens"):  # the fuzzer's values, not its patience
                    if isinstance(case.body.get(key), int) and case.body[key] > 8:
                        case.body[key] = 8
            response = case.call(base_url=live.url, timeout=120)
            sent[operation.path] = sent.get(operation.path, 0) + 1
            assert response.status_code < 500, (operation.path, response.status_code, response.text[:300], case.body)

        try:
            no_500()
        except Unsatisfiable:  # negative mode: an operation without parameters has nothing to get wrong
            assert mode == "negative" and operation.path != "/v1/chat/completions"
    assert sent.get("/v1/chat/completions", 0) >= 30, sent
