"""Each router of `seektune serve` alone, over a `ServeState` around a fake engine: no model, no torch.

    OMP_NUM_THREADS=1 pytest -q tests/unit/test_serve_routes.py

The fake engine answers every request with fixed text, one word per delta, and keeps what it
was asked, so the tests can pin the exact response body, usage counts, the adapter a model id
routes to and the limits applied. The real model behind the same routes is tests/e2e/test_serve.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import Route

from seektune.serve.app import ROUTERS, build_app
from seektune.serve.catalog import Catalog
from seektune.serve.feedback import FeedbackStore
from seektune.serve.generation import Delta, GenerationHandle, SamplingParams
from seektune.serve.routes import completions, feedback, health, models, playground
from seektune.serve.state import ServeSettings, ServeState

KEY = "sk-unit"
AUTH = {"Authorization": f"Bearer {KEY}"}
HELLO = [{"role": "user", "content": "How long do I have to return something?"}]
REPLY = "Returns are accepted within 45 days."


class FakeTokenizer:
    """One id per whitespace-separated word; a readable chat template ending in ``assistant:``."""

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [len(word) for word in text.split()] + ([0] if add_special_tokens and text else [])}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True) -> str:
        if messages[-1]["role"] == "system":
            raise ValueError("the conversation ends with a system message")
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + ("assistant:" if add_generation_prompt
                                                                              else "")


class FakeEngine:
    """The `Engine` interface without a model: every choice is ``reply``, sent a word at a time."""

    def __init__(self, reply: str = REPLY, context_length: int | None = 64, fail: bool = False):
        self.tokenizer, self.reply, self.context_length, self.fail = FakeTokenizer(), reply, context_length, fail
        self.active_requests = self.cancelled_rows = self.queue_depth = 0
        self.submitted: list[tuple[str | None, list[int], SamplingParams]] = []
        self.running = False

    async def start(self) -> None:
        self.running = True

    async def stop(self) -> None:
        self.running = False

    def submit(self, adapter, prompt_ids, params) -> GenerationHandle:
        self.submitted.append((adapter, list(prompt_ids), params))
        handle = GenerationHandle("fake", adapter, list(prompt_ids), params, asyncio.get_running_loop())
        words = self.reply.split(" ")
        for index in range(params.n):
            if self.fail:
                handle.queue.put_nowait(RuntimeError("the fake engine broke"))
                break
            for count, word in enumerate(words, 1):
                text = word if count == 1 else " " + word
                handle.queue.put_nowait(Delta(index, text, "stop" if count == len(words) else None, count))
        handle.queue.put_nowait(None)
        return handle


def make_state(tmp_path, engine: FakeEngine | None = None, **settings) -> ServeState:
    settings = ServeSettings(target="fake-model", feedback_db=tmp_path / "feedback.sqlite", **settings)
    catalog = Catalog("fake-model", {"fake-model": None, "base": None, "v2": "v2"},
                      {"fake-model": None, "base": None, "v2": "You are Lark's support assistant."})
    return ServeState.create(settings, engine or FakeEngine(), catalog)


def client_for(state: ServeState, *routers) -> TestClient:
    """The routers alone, with the error handlers and request guard every app has."""
    return TestClient(build_app(state, routers))


def chat(client: TestClient, headers: dict | None = None, **body):
    body = {"model": "fake-model", "messages": HELLO, "temperature": 0, **body}
    return client.post("/v1/chat/completions", json=body, headers=headers or {})


def sse_events(response) -> list:
    lines = [line for line in response.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:]) for line in lines]


# ---------------------------------------------------------------- completions


def test_chat_response_carries_the_engines_text_and_usage(tmp_path):
    engine = FakeEngine()
    state = make_state(tmp_path, engine)
    with client_for(state, completions.router) as client:
        response = chat(client, max_tokens=10)
    assert response.status_code == 200
    body = response.json()
    prompt = "user: How long do I have to return something?\nassistant:"  # the fake template, no system prompt
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion" and body["model"] == "fake-model"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": REPLY},
                                "finish_reason": "stop", "logprobs": None}]
    assert body["usage"] == {"prompt_tokens": len(prompt.split()), "completion_tokens": 6, "total_tokens":
                             len(prompt.split()) + 6}
    [(adapter, prompt_ids, params)] = engine.submitted
    assert adapter is None and prompt_ids == FakeTokenizer()(prompt, add_special_tokens=False)["input_ids"]
    assert params == SamplingParams(max_tokens=10, temperature=0, top_p=1.0, n=1)


def test_the_model_id_picks_the_adapter_and_its_system_prompt(tmp_path):
    engine = FakeEngine()
    with client_for(make_state(tmp_path, engine), completions.router) as client:
        assert chat(client, model="v2").status_code == 200
        assert chat(client, model="base").status_code == 200
    (v2_adapter, v2_ids, _), (base_adapter, base_ids, _) = engine.submitted
    assert (v2_adapter, base_adapter) == ("v2", None)
    system_line = ["system:", "You", "are", "Lark's", "support", "assistant."]  # the fake template's words
    assert len(v2_ids) == len(base_ids) + len(system_line)


def test_n_choices_and_max_tokens_clipped_to_the_context(tmp_path):
    engine = FakeEngine(context_length=20)
    with client_for(make_state(tmp_path, engine), completions.router) as client:
        body = chat(client, n=2).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["usage"]["completion_tokens"] == 12  # both choices counted
    prompt_len = body["usage"]["prompt_tokens"]
    assert engine.submitted[0][2].max_tokens == 20 - prompt_len  # no max_tokens asked: what fits in the context


DROP = object()


@pytest.mark.parametrize("change, param", [
    ({"messages": DROP}, "messages"),
    ({"messages": []}, "messages"),
    ({"n": 5}, "n"),
    ({"max_tokens": 2000}, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"temperature": 3}, "temperature"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "system", "content": "only a system turn"}]}, "messages"),  # the template refuses it
])
def test_a_bad_chat_request_is_a_400_naming_the_field(tmp_path, change, param):
    engine = FakeEngine()
    body = {"model": "fake-model", "messages": HELLO, "temperature": 0, **change}
    with client_for(make_state(tmp_path, engine, max_n=4, max_tokens_cap=100), completions.router) as client:
        response = client.post("/v1/chat/completions", json={k: v for k, v in body.items() if v is not DROP})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert set(error) == {"message", "type", "param", "code"} and error["code"], error  # a code to act on
    assert engine.submitted == []


def test_a_prompt_longer_than_the_limit_is_refused_before_the_engine(tmp_path):
    engine = FakeEngine()
    with client_for(make_state(tmp_path, engine, max_prompt_tokens=5), completions.router) as client:
        response = chat(client)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert response.json()["error"]["param"] == "messages" and engine.submitted == []


def test_an_unknown_model_or_a_path_is_404(tmp_path):
    with client_for(make_state(tmp_path), completions.router) as client:
        for name in ("nope", "../fake-model", "/etc/passwd"):
            response = chat(client, model=name)
            assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
            assert response.json()["error"]["param"] == "model"


def test_streamed_chunks_add_up_to_the_answer_and_end_with_done(tmp_path):
    with client_for(make_state(tmp_path), completions.router) as client:
        response = chat(client, stream=True, stream_options={"include_usage": True})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == REPLY
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    assert len({c["id"] for c in chunks}) == 1


def test_reasoning_is_returned_apart_from_the_answer(tmp_path):
    engine = FakeEngine(reply="<think> The policy says 45 days. </think> Returns take 45 days.")
    with client_for(make_state(tmp_path, engine), completions.router) as client:
        message = chat(client).json()["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Returns take 45 days.",
                       "reasoning_content": "The policy says 45 days."}


def test_text_completion_uses_no_chat_template(tmp_path):
    engine = FakeEngine()
    with client_for(make_state(tmp_path, engine), completions.router) as client:
        body = client.post("/v1/completions", json={"model": "base", "prompt": "Returns are", "max_tokens": 4}).json()
        empty = client.post("/v1/completions", json={"model": "base", "prompt": "", "max_tokens": 4})
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"][0]["text"] == REPLY and body["usage"]["prompt_tokens"] == 3  # two words + special
    assert engine.submitted[0][1] == [7, 3, 0] and engine.submitted[0][2].max_tokens == 4
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "prompt"


def test_a_completion_is_recorded_for_feedback(tmp_path):
    state = make_state(tmp_path)
    with client_for(state, completions.router) as client:
        reply = chat(client, model="v2").json()
    [stored] = FeedbackStore(state.store.path).completions()
    assert stored["id"] == reply["id"] and stored["model"] == "v2" and stored["response"] == REPLY
    assert stored["messages"] == [{"role": "system", "content": "You are Lark's support assistant."}, *HELLO]


def test_an_engine_failure_is_a_500_in_openais_shape(tmp_path):
    state = make_state(tmp_path, FakeEngine(fail=True))
    with client_for(state, completions.router) as client:
        response = chat(client)
        streamed = sse_events(chat(client, stream=True))
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "generation_failed" and "fake engine broke" in response.text
    assert streamed[-2]["error"]["code"] == "generation_failed" and streamed[-1] == "[DONE]"
    assert state.metrics.registry.get_sample_value("seektune_errors_total",
                                                   {"status": "500", "code": "generation_failed"}) == 2


def test_a_repeated_greedy_request_is_answered_from_the_cache(tmp_path):
    engine = FakeEngine()
    state = make_state(tmp_path, engine, cache_size=4)
    with client_for(state, completions.router) as client:
        first, second = chat(client).json(), chat(client).json()
        chat(client, temperature=0.7)
    assert second["choices"] == first["choices"] and second["id"] != first["id"]
    assert len(engine.submitted) == 2  # the second greedy request never reached the engine; the sampled one did
    assert state.metrics.registry.get_sample_value("seektune_cache_hits_total") == 1


# ---------------------------------------------------------------- feedback


def test_feedback_route_stores_a_row(tmp_path):
    state = make_state(tmp_path)
    state.store.record_completion("chatcmpl-1", "fake-model", HELLO, "Within a week.", None)
    with client_for(state, feedback.router) as client:
        ok = client.post("/v1/feedback", json={"id": "chatcmpl-1", "rating": "down", "correction": "45 days."})
        unknown = client.post("/v1/feedback", json={"id": "chatcmpl-nope", "rating": "up"})
        bad_rating = client.post("/v1/feedback", json={"id": "chatcmpl-1", "rating": "meh"})
        blank = client.post("/v1/feedback", json={"id": "chatcmpl-1", "rating": "up", "comment": "   "})
    assert ok.status_code == 200 and ok.json() == {"ok": True}
    [completion] = FeedbackStore(state.store.path).completions()
    assert [(f["rating"], f["correction"], f["comment"]) for f in completion["feedback"]] == [
        ("down", "45 days.", None)]
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "completion_not_found"
    assert unknown.json()["error"]["param"] == "id"
    assert bad_rating.status_code == 400 and bad_rating.json()["error"]["param"] == "rating"
    assert blank.status_code == 400 and blank.json()["error"]["code"] == "invalid_value"
    assert "comment is empty" in blank.json()["error"]["message"]


def test_feedback_route_rates_any_choice_of_an_n_request(tmp_path):
    from seektune.serve.feedback import StoredChoice

    state = make_state(tmp_path)
    state.store.record_completion("chatcmpl-3", "fake-model", HELLO, "Within a week.", None, "stop",
                                  more_choices=[StoredChoice("Within 45 days.", None, "stop")])
    with client_for(state, feedback.router) as client:
        second = client.post("/v1/feedback", json={"id": "chatcmpl-3", "rating": "up", "choice": 1})
        missing = client.post("/v1/feedback", json={"id": "chatcmpl-3", "rating": "up", "choice": 2})
        negative = client.post("/v1/feedback", json={"id": "chatcmpl-3", "rating": "up", "choice": -1})
    assert second.status_code == 200
    [completion] = FeedbackStore(state.store.path).completions()
    assert [(f["choice"], f["rating"]) for f in completion["feedback"]] == [(1, "up")]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "choice_not_found"
    assert missing.json()["error"]["param"] == "choice"
    assert negative.status_code == 400 and negative.json()["error"]["param"] == "choice"


# ---------------------------------------------------------------- models, health, metrics, playground


def test_models_router_on_a_bare_app(tmp_path):
    state = make_state(tmp_path)
    app = FastAPI()  # no guard, no error handlers: the router needs only the state
    app.state.serve = state
    app.include_router(models.router)
    body = TestClient(app).get("/v1/models").json()
    assert body == {"object": "list", "data": [
        {"id": name, "object": "model", "created": state.created, "owned_by": "seektune"}
        for name in ("fake-model", "base", "v2")]}


def test_a_router_without_state_says_what_is_missing():
    app = FastAPI()
    app.include_router(models.router)
    with pytest.raises(RuntimeError, match="no seektune ServeState"):
        TestClient(app).get("/v1/models")


def test_health_is_open_and_metrics_need_the_key(tmp_path):
    state = make_state(tmp_path, api_key=KEY)
    with client_for(state, health.router) as client:
        assert client.get("/health").json() == {"status": "ok", "models": ["fake-model", "base", "v2"]}
        refused = client.get("/metrics")
        text = client.get("/metrics", headers=AUTH).text
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert refused.json()["error"]["code"] == "invalid_api_key"
    assert 'seektune_requests_total{route="/health",status="200"} 1.0' in text
    assert 'seektune_requests_total{route="/metrics",status="401"} 1.0' in text
    assert "seektune_queue_depth 0.0" in text  # read from the engine at the scrape


def test_playground_page_and_files_load_without_the_key(tmp_path):
    with client_for(make_state(tmp_path, api_key=KEY), playground.router) as client:
        page = client.get("/")
        script = client.get("/static/app.js")
    assert page.status_code == 200 and "<title>seektune playground</title>" in page.text
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


# ---------------------------------------------------------------- the guard and the whole app


def test_every_route_of_every_router_needs_the_key(tmp_path):
    state = make_state(tmp_path, api_key=KEY)
    app = build_app(state)
    # the routers' routes (FastAPI >= 0.16x keeps included routers whole in app.routes) and the app's own (/docs...)
    routes = [route for router in ROUTERS for route in router.routes] + list(app.routes)
    paths = sorted({(route.path, method) for route in routes if isinstance(route, Route)
                    for method in route.methods - {"HEAD"}})
    open_paths = {"/health", "/"}
    assert {path for path, _ in paths} >= {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/feedback",
                                          "/metrics", "/docs", "/openapi.json"} | open_paths
    with TestClient(app) as client:
        for path, method in paths + [("/nope", "GET"), ("/v1/nope", "POST")]:
            response = client.request(method, path, json={})
            if path in open_paths:
                assert response.status_code == 200, path
            else:
                assert response.status_code == 401, (method, path)
                assert response.json()["error"]["code"] == "invalid_api_key"
                assert client.request(method, path, json={}, headers={"Authorization": "Bearer wrong"}
                                      ).status_code == 401
        assert chat(client, headers=AUTH).status_code == 200
    assert state.engine.submitted and not state.engine.running  # the lifespan started and stopped the engine


def test_a_body_over_the_cap_is_413_and_a_bad_length_400(tmp_path):
    engine = FakeEngine()
    with client_for(make_state(tmp_path, engine, max_body_bytes=200), completions.router) as client:
        big = chat(client, messages=[{"role": "user", "content": "x" * 300}])
        bad = client.post("/v1/chat/completions", content=b"{}", headers={"Content-Length": "lots"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "Invalid Content-Length header."
    assert engine.submitted == []


def test_completions_beyond_the_concurrency_cap_get_429(tmp_path):
    engine = FakeEngine()
    with client_for(make_state(tmp_path, engine, max_concurrency=0), *ROUTERS) as client:
        refused = chat(client)
        assert client.get("/v1/models").status_code == 200  # only completions count against the cap
    assert refused.status_code == 429
    assert refused.json()["error"] == {
        "message": "The server is at its limit of 0 concurrent requests; retry shortly.",
        "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}
    assert engine.submitted == []


def test_invalid_json_is_a_400(tmp_path):
    with client_for(make_state(tmp_path), completions.router) as client:
        response = client.post("/v1/chat/completions", content=b"{not json",
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    # no field to name (pydantic's location would be a character offset, "1")
    assert response.json()["error"]["param"] is None and response.json()["error"]["code"] == "invalid_json"
