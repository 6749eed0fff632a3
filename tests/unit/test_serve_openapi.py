"""What `/openapi.json` promises is what the server does; strict types; a final assistant message is continued.

    OMP_NUM_THREADS=1 pytest -q tests/unit/test_serve_openapi.py

Over the fake engine of test_serve_routes.py. Schemathesis checks the same promises against
the real model with every check it has (tests/e2e/test_serve.py).
"""

from __future__ import annotations

import pytest

from seektune.serve.app import ROUTERS
from seektune.serve.feedback import FeedbackStore
from seektune.serve.routes import completions
from tests.unit.test_serve_routes import AUTH, KEY, FakeEngine, FakeTokenizer, chat, client_for, make_state


@pytest.fixture
def document(tmp_path):
    with client_for(make_state(tmp_path, api_key=KEY, max_n=3, max_tokens_cap=77, max_concurrency=5),
                    *ROUTERS) as client:
        assert client.get("/openapi.json").status_code == 401  # the document needs the key too
        yield client.get("/openapi.json", headers=AUTH).json()


def test_every_status_the_routes_answer_is_documented_and_422_is_not(document):
    statuses = {(path, method): set(op["responses"]) for path, ops in document["paths"].items()
                for method, op in ops.items()}
    assert statuses[("/v1/chat/completions", "post")] == {"200", "400", "401", "404", "408", "413", "429"}
    assert statuses[("/v1/completions", "post")] == {"200", "400", "401", "404", "408", "413", "429"}
    assert statuses[("/v1/feedback", "post")] == {"200", "400", "401", "404", "408", "413"}
    assert statuses[("/v1/models", "get")] == {"200", "400", "401"}
    assert statuses[("/health", "get")] == {"200", "400"}  # open: no key, so no 401
    assert not any("422" in found for found in statuses.values())
    assert "HTTPValidationError" not in document["components"]["schemas"]
    chat_op = document["paths"]["/v1/chat/completions"]["post"]
    assert set(chat_op["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert "Retry-After" in chat_op["responses"]["429"]["headers"]
    assert chat_op["security"] == [{"bearer": []}] and "security" not in document["paths"]["/health"]["get"]
    error = chat_op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(document["components"]["schemas"][error]["properties"]) == {"error"}


def test_metrics_are_documented_as_text_and_served_as_text(document, tmp_path):
    content = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(content) == ["text/plain"]
    with client_for(make_state(tmp_path), *ROUTERS) as client:
        assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_the_caps_and_model_ids_of_this_server_are_in_the_schema(document):
    schemas = document["components"]["schemas"]
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        props = schemas[name]["properties"]
        assert props["model"]["enum"] == ["fake-model", "base", "v2"]
        assert {"type": "integer", "minimum": 1, "maximum": 3} in props["n"]["anyOf"]
        assert {"type": "integer", "minimum": 1, "maximum": 77} in props["max_tokens"]["anyOf"]
    assert "4096 tokens" in schemas["ChatCompletionRequest"]["properties"]["messages"]["description"]
    stop = schemas["ChatCompletionRequest"]["properties"]["stop"]["anyOf"]
    assert {"type": "array", "items": {"type": "string"}, "maxItems": 4} in stop


@pytest.mark.parametrize("change, param", [
    ({"max_tokens": "5"}, "max_tokens"), ({"stream": "yes"}, "stream"), ({"n": 2.5}, "n"),
    ({"temperature": "0"}, "temperature"), ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
])
def test_strings_are_never_coerced_to_numbers_or_booleans(tmp_path, change, param):
    engine = FakeEngine()
    with client_for(make_state(tmp_path, engine), completions.router) as client:
        response = chat(client, **change)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param and response.json()["error"]["code"] == "invalid_type"
    assert engine.submitted == []


def test_numbers_are_read_as_json_schema_reads_them(tmp_path):
    engine = FakeEngine()
    with client_for(make_state(tmp_path, engine), completions.router) as client:
        assert chat(client, temperature=1, top_p=1, n=2.0).status_code == 200  # 1 is a number, 2.0 an integer
    assert engine.submitted[0][2].n == 2


def test_a_wrong_method_is_405_with_allow(tmp_path):
    with client_for(make_state(tmp_path), *ROUTERS) as client:
        response = client.get("/v1/chat/completions")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_a_final_assistant_message_is_continued_not_dropped(tmp_path):
    engine = FakeEngine(reply=" within 45 days.")  # a continuation starts with its space
    state = make_state(tmp_path, engine)
    conversation = [{"role": "user", "content": "How long for returns?"},
                    {"role": "assistant", "content": "Returns are accepted"}]
    with client_for(state, completions.router) as client:
        body = chat(client, messages=conversation).json()
        alone = chat(client, messages=conversation[1:])
    [(_, ids, _), (_, alone_ids, _)] = engine.submitted
    # the prompt is the conversation up to the assistant's turn, then the prefix: the fake template's words
    prompt = "user: How long for returns?\nassistant: Returns are accepted"
    assert ids == FakeTokenizer()(prompt, add_special_tokens=False)["input_ids"]
    assert body["choices"][0]["message"]["content"] == " within 45 days."  # only what the model added
    assert alone.status_code == 200 and alone_ids == FakeTokenizer()("assistant: Returns are accepted",
                                                                      add_special_tokens=False)["input_ids"]
    stored = FeedbackStore(state.store.path).completions()[0]
    assert stored["messages"] == conversation[:1]  # the prompt, without the prefix
    assert stored["response"] == "Returns are accepted within 45 days."  # the whole answer trains
