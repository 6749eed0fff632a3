"""`seektune serve` end to end on tiny models: the official openai client, streaming, adapters,
batching, disconnects, limits, metrics, feedback, the cache, a streaming soak and schemathesis.

Servers run in-process (uvicorn in a thread, each on a free port). Every wait polls with a
generous deadline (`wait_for`) that fails naming what never happened; no test asserts how long
anything took (timings belong in benchmarks/serve_throughput.py). The soak runs 16 streaming
clients for 5 s here; the acceptance run is 60 s:

    SEEKTUNE_SOAK_S=60 .venv/bin/python -m pytest -q tests/e2e/test_serve.py -k soak
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from starlette.routing import Mount, Route

from seektune.recipe import load_recipe
from seektune.runs import RunDir
from seektune.serve.app import ROUTERS, ServeSettings, create_app
from seektune.serve.catalog import AdapterNotAllowed
from seektune.serve.feedback import FeedbackStore
from seektune.serve.reasoning import ThinkSplitter
from seektune.train.run import run as train
from tests.conftest import FAQ_ROWS, write_recipe

KEY = "sk-test-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
HELLO = [{"role": "user", "content": "How long do I have to return something?"}]
DEADLINE_S = 60.0  # only stops a hung test; on a loaded 2-core machine a step can take 10-20x longer than usual


def wait_for(condition, what: str, timeout: float = DEADLINE_S) -> None:
    """Poll ``condition()`` until it is true; fail naming ``what`` when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.005)


class LiveServer:
    """create_app(settings) served by uvicorn in a daemon thread on a free port."""

    def __init__(self, settings: ServeSettings):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.app = create_app(settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), "uvicorn to start")
        assert self.server.started, "the server thread exited before it started listening"
        self.url = f"http://127.0.0.1:{port}"

    def client(self, key: str | None = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key or "none", max_retries=0, timeout=30)

    def metric(self, name: str, labels: dict | None = None) -> float:
        return self.app.state.serve.metrics.registry.get_sample_value(name, labels or {}) or 0.0

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=DEADLINE_S)
        assert not self.thread.is_alive(), "the server did not shut down"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, long_llama) -> Path:
    """Two LoRA runs on the same base, trained differently: runs/alpha and runs/beta."""
    root = tmp_path_factory.mktemp("runs")
    faq = root / "faq.jsonl"
    faq.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in FAQ_ROWS * 2), encoding="utf-8")
    for name, lr, steps in (("alpha", 2e-2, 3), ("beta", 5e-2, 4)):
        recipe = write_recipe(root / f"{name}.yaml", long_llama, faq, root / name, train__max_steps=steps, train__lr=lr)
        train(load_recipe(recipe))
    return root


@pytest.fixture(scope="module")
def server(runs, long_llama, tmp_path_factory):
    """The base model with both adapters, an API key, no cache."""
    live = LiveServer(ServeSettings(
        target=str(long_llama), adapters={"alpha": runs / "alpha", "beta": runs / "beta"}, api_key=KEY,
        allowed_run_dirs=[runs], feedback_db=tmp_path_factory.mktemp("fb") / "feedback.sqlite",
        max_tokens_cap=2000, max_n=4))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def small(runs):
    """The alpha run served by its directory: its adapter + "base", cache on, tiny caps, no key."""
    live = LiveServer(ServeSettings(target=str(runs / "alpha"), cache_size=8, max_tokens_cap=16, max_n=2,
                                    max_body_bytes=20_000, allowed_run_dirs=[runs]))
    yield live
    live.stop()


def _chat(client, model="alpha", **kw):
    kw.setdefault("max_tokens", 24)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model=model, messages=kw.pop("messages", HELLO), **kw)


# ---------------------------------------------------------------- the openai client


def test_openai_client_chat_and_models(server):
    client = server.client()
    reply = _chat(client)
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion" and reply.model == "alpha"
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5 and 0 < reply.usage.completion_tokens <= 24
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    default = server.app.state.serve.catalog.default
    assert default.startswith("long-llama")  # the model directory's name
    assert {m.id for m in client.models.list()} == {default, "base", "alpha", "beta"}
    text = client.completions.create(model="base", prompt="Returns are accepted", max_tokens=8, temperature=0)
    assert text.object == "text_completion" and text.id.startswith("cmpl-") and text.usage.completion_tokens <= 8


def test_streaming_deltas_equal_the_non_streaming_answer(server):
    client = server.client()
    for model in ("alpha", "base"):
        whole = _chat(client, model, max_tokens=40).choices[0]
        chunks = list(_chat(client, model, max_tokens=40, stream=True, stream_options={"include_usage": True}))
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == whole.message.content and streamed
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.finish_reason
        assert chunks[-1].usage.completion_tokens > 0


def test_n_choices_and_seeded_sampling(server):
    client = server.client()
    reply = _chat(client, n=3, temperature=1.0, seed=7, max_tokens=12, presence_penalty=0.5)
    again = _chat(client, n=3, temperature=1.0, seed=7, max_tokens=12, presence_penalty=0.5)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert [c.message.content for c in reply.choices] == [c.message.content for c in again.choices]
    assert len({c.message.content for c in reply.choices}) > 1  # one generator per request, not per row


def test_typed_errors(server):
    with pytest.raises(openai.AuthenticationError):
        _chat(server.client(key="wrong"))
    with pytest.raises(openai.NotFoundError) as err:
        _chat(server.client(), model="../../etc")
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        _chat(server.client(), max_tokens=2001)
    assert err.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError):
        _chat(server.client(), n=5)
    response = httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, json={"model": "alpha"})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.json()["error"]["param"] == "messages"
    response = httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, content=b"{not json")
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_requests_cannot_name_files_or_templates(server):
    body = {"model": "alpha", "messages": HELLO, "max_tokens": 8, "temperature": 0}
    plain = httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, json=body).json()
    sneaky = httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, json={
        **body, "chat_template": "{{ raise_exception('x') }}", "adapter": "/etc/passwd",
        "tools": [{"type": "function", "function": {"name": "f", "code": "import os"}}]}).json()
    assert sneaky["choices"][0]["message"] == plain["choices"][0]["message"]  # the extra fields were ignored
    for name in ("../alpha", "/etc/passwd", "alpha/../beta", "C:\\x"):
        assert httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH,
                          json={**body, "model": name}).status_code == 404


def test_every_route_but_health_needs_the_key(server):
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert httpx.get(f"{server.url}/").status_code == 200  # the playground page loads; it asks for the key
    # the routers' routes (FastAPI >= 0.16x keeps included routers whole in app.routes) and the app's own (/docs...)
    routes = [route for router in ROUTERS for route in router.routes] + list(server.app.routes)
    paths = sorted({(route.path, method) for route in routes if isinstance(route, Route)
                    for method in route.methods - {"HEAD"}}) + [("/nope", "GET"), ("/v1/nope", "POST")]
    assert {"/docs", "/openapi.json", "/metrics", "/v1/models", "/v1/feedback"} <= {path for path, _ in paths}
    checked = 0
    for path, method in paths:
        if path in ("/health", "/"):
            continue
        response = httpx.request(method, f"{server.url}{path}", json={})
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["code"] == "invalid_api_key"
        checked += 1
    assert checked >= 10
    assert not [r for r in server.app.routes if isinstance(r, Mount) and r.path != "/static"]


def test_two_adapters_answer_differently(server):
    client = server.client()
    answers = {model: _chat(client, model, max_tokens=16).choices[0].message.content
               for model in ("alpha", "beta", "base")}
    assert len(set(answers.values())) == 3, answers
    assert _chat(client, "alpha", max_tokens=16).choices[0].message.content == answers["alpha"]  # switching back


def test_concurrent_requests_are_batched(server):
    before = server.metric("seektune_batch_size_count") - server.metric("seektune_batch_size_bucket", {"le": "1.0"})
    client = server.client()
    barrier = threading.Barrier(8)

    def ask(i):
        barrier.wait(timeout=DEADLINE_S)
        return _chat(client, messages=[{"role": "user", "content": f"What does shipping cost? ({i})"}],
                     max_tokens=16).choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        batched = list(pool.map(ask, range(8)))
    after = server.metric("seektune_batch_size_count") - server.metric("seektune_batch_size_bucket", {"le": "1.0"})
    assert after > before, "no batch of more than one row was run"
    alone = _chat(client, messages=[{"role": "user", "content": "What does shipping cost? (3)"}], max_tokens=16)
    assert alone.choices[0].message.content == batched[3]  # left padding does not change a greedy answer


def test_a_request_joins_a_running_batch_without_changing_answers(server):
    client = server.client()
    long_q = [{"role": "user", "content": "What is the warranty plan called?"}]
    short_q = [{"role": "user", "content": "What does shipping cost?"}]
    long_alone = _chat(client, "base", messages=long_q, max_tokens=600).choices[0].message.content
    short_alone = _chat(client, "base", messages=short_q, max_tokens=12).choices[0].message.content
    assert len(long_alone) > 200  # runs long enough for the short request to arrive mid-answer
    pieces, done = [], threading.Event()

    def stream_long():
        for chunk in _chat(client, "base", messages=long_q, max_tokens=600, stream=True):
            pieces.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
        done.set()

    thread = threading.Thread(target=stream_long, daemon=True)
    thread.start()
    wait_for(lambda: len(pieces) >= 5 or not thread.is_alive(), "the long answer's first streamed pieces")
    assert len(pieces) >= 5, "the long stream ended (or failed) before it had sent 5 pieces"
    short = _chat(client, "base", messages=short_q, max_tokens=12).choices[0].message.content
    assert not done.is_set(), "the short request waited for the long one instead of joining its batch"
    thread.join(timeout=DEADLINE_S)
    assert done.is_set(), "the long stream never finished"
    assert short == short_alone and "".join(pieces) == long_alone


def _wait_idle(live: LiveServer) -> None:
    wait_for(lambda: not live.app.state.serve.engine.active_requests and not live.metric("seektune_in_flight_requests"),
             "the server to free every request's slot")


def test_client_disconnect_mid_stream_frees_its_slot(server):
    engine = server.app.state.serve.engine
    cancelled = engine.cancelled_rows
    body = {"model": "base", "messages": HELLO, "max_tokens": 2000, "temperature": 0, "stream": True}
    with httpx.Client(timeout=10) as client, \
            client.stream("POST", f"{server.url}/v1/chat/completions", headers=AUTH, json=body) as response:
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data: {")
            if seen >= 4:
                break
        assert engine.active_requests == 1
    _wait_idle(server)
    assert engine.cancelled_rows == cancelled + 1
    assert engine.active_requests == 0
    # a non-streaming client that gives up is noticed too, and is not counted as a server error: it hangs up
    # once its request is generating (a raw socket, so nothing depends on how fast the model is)
    payload = json.dumps({**body, "stream": False}).encode()
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as quitter:
        quitter.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                        + payload)
        wait_for(lambda: engine.active_requests == 1, "the non-streaming request to start generating")
    _wait_idle(server)
    assert engine.cancelled_rows == cancelled + 2
    assert not server.metric("seektune_requests_total", {"route": "/v1/chat/completions", "status": "500"})


# "429 at once while a generation holds the only slot" (with Retry-After) and "a stalled upload holds no
# slot" are tested on a live server in tests/e2e/test_serve_hardening.py.


def test_metrics_count_requests_errors_tokens_and_latency(server):
    _chat(server.client())
    with pytest.raises(openai.NotFoundError):
        _chat(server.client(), model="nope")
    text = httpx.get(f"{server.url}/metrics", headers=AUTH).text
    for name in ("seektune_requests_total", "seektune_errors_total", "seektune_request_latency_seconds_bucket",
                 "seektune_time_to_first_token_seconds_bucket", "seektune_prompt_tokens_total",
                 "seektune_completion_tokens_total", "seektune_batch_size_bucket", "seektune_cache_hits_total",
                 "seektune_cache_misses_total", "seektune_queue_depth", "seektune_active_requests"):
        assert name in text, name
    assert server.metric("seektune_requests_total", {"route": "/v1/chat/completions", "status": "200"}) >= 1
    assert server.metric("seektune_errors_total", {"status": "404", "code": "model_not_found"}) >= 1
    assert server.metric("seektune_completion_tokens_total") > 0


def test_feedback_is_stored_and_unknown_ids_404(server):
    reply = _chat(server.client(), max_tokens=8)
    url = f"{server.url}/v1/feedback"
    response = httpx.post(url, headers=AUTH, json={"id": reply.id, "rating": "down", "correction": "45 days."})
    assert response.status_code == 200 and response.json() == {"ok": True}
    stored = {c["id"]: c for c in FeedbackStore(server.app.state.serve.store.path).completions()}
    assert stored[reply.id]["response"] == reply.choices[0].message.content
    assert stored[reply.id]["messages"][-1] == HELLO[-1] and stored[reply.id]["model"] == "alpha"
    assert stored[reply.id]["feedback"][-1]["correction"] == "45 days."
    assert httpx.post(url, headers=AUTH, json={"id": "chatcmpl-nope", "rating": "up"}).status_code == 404
    bad = httpx.post(url, headers=AUTH, json={"id": reply.id, "rating": "meh"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rating"
    streamed = list(_chat(server.client(), max_tokens=8, stream=True))
    assert httpx.post(url, headers=AUTH, json={"id": streamed[0].id, "rating": "up"}).status_code == 200


def test_cache_hit_on_a_repeated_greedy_request(small, runs):
    assert small.app.state.serve.store.path == RunDir(runs / "alpha").feedback_db  # a run keeps its own feedback
    client = small.client(key=None)
    run_id = next(m.id for m in client.models.list() if m.id != "base")
    assert run_id == "alpha"
    first = _chat(client, run_id, max_tokens=12)
    hits = small.metric("seektune_cache_hits_total")
    second = _chat(client, run_id, max_tokens=12)
    assert small.metric("seektune_cache_hits_total") == hits + 1
    assert second.choices[0].message.content == first.choices[0].message.content and second.id != first.id
    streamed = "".join(c.choices[0].delta.content or "" for c in _chat(client, run_id, max_tokens=12, stream=True))
    assert streamed == first.choices[0].message.content and small.metric("seektune_cache_hits_total") == hits + 2
    _chat(client, run_id, max_tokens=12, temperature=0.7)
    assert small.metric("seektune_cache_hits_total") == hits + 2  # sampled requests are never cached


def test_body_size_cap_gives_413(small):
    response = httpx.post(f"{small.url}/v1/chat/completions",
                          json={"model": "alpha", "messages": [{"role": "user", "content": "x" * 30_000}]})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def test_adapters_outside_the_rules_are_refused_at_startup(runs, long_llama, tmp_path):
    for name in ("../alpha", "a/b", "", ".hidden", "x" * 65):
        with pytest.raises(AdapterNotAllowed):
            create_app(ServeSettings(target=str(long_llama), adapters={name: runs / "alpha"}, allowed_run_dirs=[runs]))
    with pytest.raises(AdapterNotAllowed, match="outside the allowed"):
        create_app(ServeSettings(target=str(long_llama), adapters={"a": runs / "alpha"}, allowed_run_dirs=[tmp_path]))
    (tmp_path / "link").symlink_to(runs / "alpha")  # a link inside the allowed dir pointing out of it
    with pytest.raises(AdapterNotAllowed, match="outside the allowed"):
        create_app(ServeSettings(target=str(long_llama), adapters={"a": tmp_path / "link"},
                                 allowed_run_dirs=[tmp_path]))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "adapter_config.json").write_text("{}")
    (pickled / "adapter_model.bin").write_bytes(b"\x80")
    with pytest.raises(AdapterNotAllowed, match="safetensors"):
        create_app(ServeSettings(target=str(long_llama), adapters={"p": pickled}, allowed_run_dirs=[tmp_path]))


def test_r1_style_model_returns_reasoning_content(long_llama, tmp_path):
    """The deepseek-r1 template opens <think> in the prompt: what follows is reasoning until </think>."""
    import shutil

    r1 = tmp_path / "tiny-r1-distill"  # the name picks the registry's deepseek-r1-distill family
    shutil.copytree(long_llama, r1)
    live = LiveServer(ServeSettings(target=str(r1), feedback_db=tmp_path / "f.sqlite"))
    try:
        client = live.client()
        whole = _chat(client, "tiny-r1-distill", max_tokens=20).choices[0].message
        assert whole.reasoning_content and "<think>" not in whole.reasoning_content
        chunks = list(_chat(client, "tiny-r1-distill", max_tokens=20, stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == whole.reasoning_content
        assert "".join(d.content or "" for d in deltas) == whole.content
        stored = FeedbackStore(live.app.state.serve.store.path).completions()[-1]
        assert stored["reasoning"] == whole.reasoning_content
    finally:
        live.stop()


def test_vllm_engine_fails_clearly_without_cuda_or_vllm(long_llama):
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vLLM and CUDA are present: this test covers the machines without them")
    with pytest.raises(RuntimeError, match="--engine vllm needs a CUDA GPU and the vllm package"):
        create_app(ServeSettings(target=str(long_llama), engine="vllm"))


@pytest.mark.parametrize("text, prompt_opens", [
    ("<think>\nThe window is 45 days.\n</think>\n\nReturns take 45 days.", False),
    ("  Let me check the policy.  </think>  Returns take 45 days. ", True),
    ("No reasoning here, just < and <th as text.\n", False),
    ("<think>unfinished thought <", False),
])
def test_reasoning_is_split_the_same_streamed_or_whole(text, prompt_opens):
    whole = ThinkSplitter(prompt_opens)
    expected = whole.feed(text) + whole.finish()
    merged = {k: "".join(t for kind, t in expected if kind == k) for k in ("reasoning_content", "content")}
    assert merged["content"] == merged["content"].strip()
    for size in (1, 2, 3, 5):
        splitter = ThinkSplitter(prompt_opens)
        pieces = [p for i in range(0, len(text), size) for p in splitter.feed(text[i:i + size])] + splitter.finish()
        assert {k: "".join(t for kind, t in pieces if kind == k) for k in merged} == merged
    if "</think>" in text:
        assert "45 days" in merged["reasoning_content"] or "policy" in merged["reasoning_content"]
        assert merged["content"] == "Returns take 45 days."


# ---------------------------------------------------------------- robustness


def test_soak_16_streaming_clients(server):
    seconds = float(os.environ.get("SEEKTUNE_SOAK_S", "5"))
    url = f"{server.url}/v1/chat/completions"
    results = {"streams": 0, "errors": []}

    async def client(i: int):
        async with httpx.AsyncClient(timeout=60, headers=AUTH) as http:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                body = {"model": ("alpha", "beta", "base")[i % 3], "messages": HELLO, "stream": True,
                        "max_tokens": 8 + i % 24, "temperature": 0 if i % 2 else 0.8}
                async with http.stream("POST", url, json=body) as response:
                    lines = [line async for line in response.aiter_lines() if line]
                if response.status_code != 200 or lines[-1] != "data: [DONE]" or any('"error"' in l for l in lines):
                    results["errors"].append((response.status_code, lines[-3:]))
                results["streams"] += 1

    async def main():
        await asyncio.gather(*(client(i) for i in range(16)))

    asyncio.run(main())
    print(f"soak: {results['streams']} streams from 16 clients in {seconds:.0f} s, {len(results['errors'])} errors")
    assert results["errors"] == []
    assert results["streams"] >= 16
    _wait_idle(server)


@pytest.fixture(scope="module")
def keyed(runs):
    """The alpha run behind an API key, with small caps (n 2, max_tokens 16) so generated requests stay quick."""
    live = LiveServer(ServeSettings(target=str(runs / "alpha"), api_key=KEY, max_tokens_cap=16, max_n=2,
                                    allowed_run_dirs=[runs]))
    yield live
    live.stop()


def test_schemathesis_with_every_check_finds_nothing(keyed, tmp_path):
    """``schemathesis run`` against /openapi.json with the key and all its checks: the server does what its
    document says (statuses, bodies, content types, caps, auth, 405s). SEEKTUNE_SCHEMATHESIS_EXAMPLES raises
    the example count per operation (the acceptance run used 200)."""
    examples = os.environ.get("SEEKTUNE_SCHEMATHESIS_EXAMPLES", "25")
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{keyed.url}/openapi.json",
               "-H", f"Authorization: Bearer {KEY}", "--checks", "all", "--max-examples", examples, "--seed", "7",
               "--workers", "1", "--no-color", "--request-timeout", str(DEADLINE_S), "--generation-database", "none",
               "--report", "ndjson", "--report-dir", str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "No issues found" in result.stdout, result.stdout[-3000:]
    [report] = tmp_path.glob("*.ndjson")
    statuses = set(re.findall(r'"status_code":(\d+)', report.read_text(encoding="utf-8")))
    assert {"200", "400", "401", "404", "405"} <= statuses  # answers, refusals, auth and wrong methods all met
