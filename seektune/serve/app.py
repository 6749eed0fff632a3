"""The OpenAI-compatible HTTP server: routes, API key, limits, errors, metrics, feedback.

    seektune serve runs/customer-service                          # the run's adapter (+ "base")
    seektune serve runs/cs --adapter v2=runs/cs-v2 --api-key $KEY # two adapters, key required
    seektune serve smollm2-135m-instruct --port 8080              # any model the loader knows

Routes: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (SSE when
``stream: true``), ``GET /v1/models``, ``POST /v1/feedback``, ``GET /metrics``
(Prometheus), ``GET /health``, and the web playground at ``/`` with its files under
``/static``. Errors use OpenAI's body ``{"error": {"message", "type", "param", "code"}}``.

With an API key set, every route but ``/health``, ``/`` and ``/static/*`` needs
``Authorization: Bearer <key>`` (also ``/metrics``, ``/docs`` and ``/openapi.json``). The
playground page itself loads without the key so a browser can open it; it then asks
the user for the key and sends it with each API call.

Requests never name a file, a template or code: the request models keep only OpenAI's
sampling fields (unknown fields such as ``chat_template`` or ``tools`` are dropped, never
acted on), and the ``model`` field only selects among the ids loaded at start-up.

The HTTP server is FastAPI + uvicorn. The request guard (key, body size, concurrency,
per-route metrics) is a plain ASGI middleware rather than ``BaseHTTPMiddleware``
because the latter buffers and re-wraps streaming responses.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from seektune.data.render import prompt_text
from seektune.recipe import RESOLVED_NAME
from seektune.serve.engine import EngineError, SamplingParams, load_hf_engine, load_vllm_engine
from seektune.serve.feedback import FeedbackStore

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
OPEN_PATHS = {"/health", "/"}  # and /static/*: the playground page must load before the user types the key
LIMITED_PATHS = {"/v1/chat/completions", "/v1/completions"}  # count against max_concurrency
ROUTE_LABELS = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/feedback", "/metrics", "/health", "/",
                "/docs", "/openapi.json"}


@dataclass
class ServeSettings:
    """Everything `seektune serve` takes; see the module docstring."""

    target: str  # a run directory or a model name / path
    adapters: dict[str, Path] = field(default_factory=dict)  # model id -> run directory holding a PEFT adapter
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_batch: int = 8
    batch_wait_ms: float = 10
    max_tokens_cap: int = 1024
    max_prompt_tokens: int = 4096
    max_n: int = 4
    max_concurrency: int = 64  # completion requests in flight; beyond -> 429 at once
    max_body_bytes: int = 1_000_000
    cache_size: int = 0  # exact-match response cache entries (temperature 0 only); 0 = off
    cache_ttl_s: float = 600
    feedback_db: Path | None = None  # default <run>/feedback.sqlite for a run, else ./seektune-feedback.sqlite
    engine: Literal["hf", "vllm"] = "hf"
    allowed_run_dirs: list[Path] | None = None  # adapters must resolve under one of these; default: the cwd

    def feedback_path(self) -> Path:
        if self.feedback_db is not None:
            return Path(self.feedback_db)
        run = Path(self.target)
        return run / "feedback.sqlite" if (run / RESOLVED_NAME).is_file() else Path("seektune-feedback.sqlite")


# ---------------------------------------------------------------- request bodies


class _Body(BaseModel):
    # Unknown OpenAI fields (tools, logit_bias, user, ...) and anything else are dropped, never acted on.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    model: str = Field(max_length=256, description="A model id from GET /v1/models.")
    temperature: float | None = Field(None, ge=0, le=2, description="0 = greedy. Default 1.")
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, description="Choices per request, at most the server's max_n.")
    stop: str | list[str] | None = Field(None, description="Up to 4 strings that end a choice (not returned).")
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stream: bool | None = False
    stream_options: StreamOptions | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Sampling):
    prompt: str = Field(description="Text to continue; no chat template is applied.")
    max_tokens: int | None = Field(16, ge=1)


class FeedbackRequest(_Body):
    id: str = Field(min_length=1, max_length=128, description="A completion id returned by this server.")
    rating: Literal["up", "down"]
    correction: str | None = Field(None, description="A better answer.")
    comment: str | None = None


# ---------------------------------------------------------------- errors and metrics


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


class Metrics:
    """The Prometheus collectors of one app (own registry: several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("seektune_requests", "HTTP requests by route and status.", ["route", "status"],
                                registry=r)
        self.errors = Counter("seektune_errors", "Error responses by status and OpenAI error code.",
                              ["status", "code"], registry=r)
        self.latency = Histogram("seektune_request_latency_seconds", "Request latency (a stream: until its end).",
                                 ["route"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.ttft = Histogram("seektune_time_to_first_token_seconds", "From request arrival to the first token.",
                              registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.prompt_tokens = Counter("seektune_prompt_tokens", "Prompt tokens of completion requests.", registry=r)
        self.completion_tokens = Counter("seektune_completion_tokens", "Tokens generated.", registry=r)
        self.batch_size = Histogram("seektune_batch_size", "Rows per decode step (the running batch).", registry=r,
                                    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64))
        self.cache_hits = Counter("seektune_cache_hits", "Response cache hits.", registry=r)
        self.cache_misses = Counter("seektune_cache_misses", "Response cache misses (cacheable requests).", registry=r)
        self.queue_depth = Gauge("seektune_queue_depth", "Requests waiting for a batch.", registry=r)
        self.active = Gauge("seektune_active_requests", "Requests queued or generating in the engine.", registry=r)
        self.in_flight = Gauge("seektune_in_flight_requests", "Completion requests being served.", registry=r)
        self.cancelled = Gauge("seektune_cancelled_rows", "Rows dropped because their client went away.", registry=r)


def error_body(err: APIError) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}


def _error_response(metrics: Metrics, err: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
    metrics.errors.labels(str(err.status), err.code or err.type).inc()
    return JSONResponse(error_body(err), status_code=err.status, headers=headers)


class Guard:
    """Plain ASGI middleware: API key, concurrency cap, body size cap, per-route request metrics."""

    def __init__(self, app, settings: ServeSettings, metrics: Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in ROUTE_LABELS else "/static" if path.startswith("/static/") else "other"
        status, start = 500, time.perf_counter()

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, send_status, path)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)

    def _refuse(self, err: APIError, headers: dict[str, str] | None = None):
        return _error_response(self.metrics, err, headers)

    async def _guarded(self, scope, receive, send, path):
        if self.settings.api_key and path not in OPEN_PATHS and not path.startswith("/static/"):
            if not self._authorised(scope):
                response = self._refuse(APIError(401, "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
                                                 code="invalid_api_key"), {"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        limited = path in LIMITED_PATHS
        if limited:
            if self.in_flight >= self.settings.max_concurrency:
                response = self._refuse(APIError(
                    429, f"The server is at its limit of {self.settings.max_concurrency} concurrent requests; "
                         "retry shortly.", "rate_limit_error", "rate_limit_exceeded"))
                return await response(scope, receive, send)
            self.in_flight += 1
            self.metrics.in_flight.set(self.in_flight)
        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                receive = await self._buffered(scope, receive, send)
                if receive is None:
                    return
            await self.app(scope, receive, send)
        finally:
            if limited:
                self.in_flight -= 1
                self.metrics.in_flight.set(self.in_flight)

    def _authorised(self, scope) -> bool:
        expected = f"Bearer {self.settings.api_key}".encode()
        given = dict(scope["headers"]).get(b"authorization", b"")
        return hmac.compare_digest(given, expected)

    async def _buffered(self, scope, receive, send):
        """Read the whole body (at most max_body_bytes) and replay it; None if refused with 413/400."""
        limit = self.settings.max_body_bytes
        too_large = APIError(413, f"Request body is larger than {limit} bytes.", code="request_too_large")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    await self._refuse(too_large)(scope, receive, send)
                    return None
            except ValueError:
                await self._refuse(APIError(400, "Invalid Content-Length header."))(scope, receive, send)
                return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(too_large)(scope, receive, send)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        return replayed


# ---------------------------------------------------------------- output shaping


class ThinkSplitter:
    """Streamed text -> ("reasoning_content" | "content", text) pieces, split at <think>...</think>.

    R1-style models think inside ``<think>`` first (their template may already open the tag
    in the prompt: ``in_reasoning``). Whitespace around both parts is dropped, holding back
    only what could still turn into a tag or trailing whitespace, so the concatenated
    stream equals the non-streaming answer exactly.
    """

    OPEN, CLOSE = "<think>", "</think>"

    def __init__(self, in_reasoning: bool = False):
        self.mode = "reasoning" if in_reasoning else "start"  # start -> reasoning? -> content
        self.buffer = ""
        self.lead = True  # at the start of the current part: drop leading whitespace

    def feed(self, text: str) -> list[tuple[str, str]]:
        self.buffer += text
        out: list[tuple[str, str]] = []
        while True:
            if self.lead:
                self.buffer = self.buffer.lstrip()
                if not self.buffer:
                    return out
            if self.mode == "start":
                if self.buffer.startswith(self.OPEN):
                    self.buffer, self.mode, self.lead = self.buffer[len(self.OPEN):], "reasoning", True
                    continue
                if self.OPEN.startswith(self.buffer):
                    return out  # may still become <think>
                self.mode = "content"
            elif self.mode == "reasoning":
                end = self.buffer.find(self.CLOSE)
                if end >= 0:
                    self._emit(out, "reasoning_content", self.buffer[:end].rstrip())
                    self.buffer, self.mode, self.lead = self.buffer[end + len(self.CLOSE):], "content", True
                    continue
                self._emit_held(out, "reasoning_content", self.CLOSE)
                return out
            else:
                self._emit_held(out, "content", None)
                return out

    def _emit(self, out, kind, text):
        if text:
            out.append((kind, text))
            self.lead = False

    def _emit_held(self, out, kind, tag):
        """Emit the buffer except trailing whitespace and any tail that could start ``tag``."""
        cut = len(self.buffer)
        if tag:
            for size in range(min(len(tag) - 1, cut), 0, -1):
                if self.buffer.endswith(tag[:size]):
                    cut -= size
                    break
        cut = len(self.buffer[:cut].rstrip())
        self._emit(out, kind, self.buffer[:cut])
        self.buffer = self.buffer[cut:]

    def finish(self) -> list[tuple[str, str]]:
        kind = "reasoning_content" if self.mode == "reasoning" else "content"
        text, self.buffer = self.buffer.strip(), ""
        return [(kind, text)] if text else []


@dataclass
class _Choice:
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    tokens: int = 0

    def text(self) -> str:
        return "".join(self.content)

    def reasoning_text(self) -> str | None:
        return "".join(self.reasoning) or None


class ResponseCache:
    """Exact-match LRU cache with a time to live, for greedy requests only."""

    def __init__(self, size: int, ttl_s: float):
        self.size, self.ttl_s = size, ttl_s
        self.entries: collections.OrderedDict[Any, tuple[float, Any]] = collections.OrderedDict()

    def get(self, key):
        entry = self.entries.get(key)
        if entry is None:
            return None
        stored, value = entry
        if time.monotonic() - stored > self.ttl_s:
            del self.entries[key]
            return None
        self.entries.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        self.entries[key] = (time.monotonic(), value)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


def _sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


class _SSEResponse(StreamingResponse):
    """Closes its generator however the response ends, so a client that leaves mid-stream
    cancels its rows at once (the generator's ``finally``) instead of at garbage collection."""

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


# ---------------------------------------------------------------- the app


@dataclass
class _Job:
    """A validated completion request, ready for the engine."""

    kind: Literal["chat", "text"]
    model: str
    adapter: str | None
    messages: list[dict[str, str]]  # what feedback records (a text prompt as one user message)
    prompt_ids: list[int]
    params: SamplingParams
    in_reasoning: bool
    stream: bool
    include_usage: bool


def _plain(message: ChatMessage) -> dict[str, str]:
    content = message.content
    if isinstance(content, list):
        content = "".join(part.text for part in content)
    return {"role": "system" if message.role == "developer" else message.role, "content": content or ""}


def create_app(settings: ServeSettings) -> FastAPI:
    """Load the model and adapters, and build the app (the engine starts with the app's lifespan)."""
    metrics = Metrics()
    allowed = [Path(d) for d in settings.allowed_run_dirs] if settings.allowed_run_dirs else [Path.cwd()]
    adapters = {name: Path(path) for name, path in settings.adapters.items()}
    if settings.engine == "vllm":
        engine, catalog = load_vllm_engine(settings.target, adapters, allowed, max_batch=settings.max_batch)
    elif settings.engine == "hf":
        engine, catalog = load_hf_engine(settings.target, adapters, allowed, max_batch=settings.max_batch,
                                         batch_wait_ms=settings.batch_wait_ms, on_step=metrics.batch_size.observe)
    else:
        raise ValueError(f"unknown engine {settings.engine!r}; choose hf or vllm")
    metrics.queue_depth.set_function(lambda: engine.queue_depth)
    metrics.active.set_function(lambda: engine.active_requests)
    metrics.cancelled.set_function(lambda: engine.cancelled_rows)
    store = FeedbackStore(settings.feedback_path())
    cache = ResponseCache(settings.cache_size, settings.cache_ttl_s) if settings.cache_size > 0 else None
    tokenizer = engine.tokenizer
    created = int(time.time())

    async def lifespan(app: FastAPI):
        await engine.start()
        try:
            yield
        finally:
            await engine.stop()

    app = FastAPI(title="seektune serve", version="1", lifespan=lifespan,
                  description="OpenAI-compatible chat and completions for seektune runs, with feedback capture.")
    app.state.engine, app.state.catalog, app.state.metrics, app.state.store = engine, catalog, metrics, store
    app.state.settings = settings

    # -- errors

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, err: APIError):
        return _error_response(metrics, err)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        return _error_response(metrics, APIError(400, message, code="invalid_value", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, err: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return _error_response(metrics, APIError(err.status_code, str(err.detail), code=code))

    @app.exception_handler(Exception)
    async def on_crash(request: Request, err: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return _error_response(metrics, APIError(500, "Internal server error.", "server_error", "internal_error"))

    # -- validation shared by both completion routes

    def resolve_model(name: str) -> str | None:
        if name not in catalog.routes:
            raise APIError(404, f"The model {name!r} does not exist; GET /v1/models lists the served ids.",
                           code="model_not_found", param="model")
        return catalog.routes[name]

    def sampling(body: _Sampling, prompt_len: int, requested: int | None, param: str) -> SamplingParams:
        n = body.n or 1
        if n > settings.max_n:
            raise APIError(400, f"n is {n}; this server allows at most {settings.max_n}.", param="n")
        if requested is not None and requested > settings.max_tokens_cap:
            raise APIError(400, f"max_tokens is {requested}; this server allows at most {settings.max_tokens_cap}.",
                           param="max_tokens")
        if prompt_len > settings.max_prompt_tokens:
            raise APIError(400, f"The prompt has {prompt_len} tokens; this server allows at most "
                                f"{settings.max_prompt_tokens}.", code="context_length_exceeded", param=param)
        room = engine.context_length - prompt_len if engine.context_length else settings.max_tokens_cap
        if room < 1:
            raise APIError(400, f"The prompt has {prompt_len} tokens, the model's whole context is "
                                f"{engine.context_length}.", code="context_length_exceeded", param=param)
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > 4:
            raise APIError(400, "stop takes at most 4 strings.", param="stop")
        return SamplingParams(
            max_tokens=min(requested or settings.max_tokens_cap, room),
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            seed=body.seed,
            presence_penalty=body.presence_penalty or 0.0,
            frequency_penalty=body.frequency_penalty or 0.0,
            stop=tuple(s for s in stop if s),
            n=n,
        )

    def tokens_of(text: str, special: bool) -> list[int]:
        try:
            return tokenizer(text, add_special_tokens=special)["input_ids"]
        except Exception as err:  # e.g. a lone surrogate the tokenizer cannot encode
            raise APIError(400, f"The text cannot be tokenized: {err}") from err

    def chat_job(body: ChatCompletionRequest) -> _Job:
        adapter = resolve_model(body.model)
        messages = [_plain(m) for m in body.messages]
        system = catalog.system_prompts.get(body.model)
        if system and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system})
        try:
            text = prompt_text(tokenizer, messages)
        except Exception as err:  # the chat template refused this conversation (e.g. roles out of order)
            raise APIError(400, f"The conversation cannot be rendered with the model's chat template: {err}",
                           param="messages") from err
        ids = tokens_of(text, False)
        requested = body.max_completion_tokens or body.max_tokens
        return _Job("chat", body.model, adapter, messages, ids, sampling(body, len(ids), requested, "messages"),
                    text.rstrip().endswith(ThinkSplitter.OPEN), bool(body.stream),
                    bool(body.stream_options and body.stream_options.include_usage))

    def text_job(body: CompletionRequest) -> _Job:
        adapter = resolve_model(body.model)
        ids = tokens_of(body.prompt, True)
        if not ids:
            raise APIError(400, "The prompt is empty.", param="prompt")
        return _Job("text", body.model, adapter, [{"role": "user", "content": body.prompt}], ids,
                    sampling(body, len(ids), body.max_tokens, "prompt"), False, bool(body.stream),
                    bool(body.stream_options and body.stream_options.include_usage))

    # -- running a job

    async def run_job(job: _Job, request: Request, started: float) -> AsyncIterator[tuple[str, Any]]:
        """Events: ("piece", (index, kind, text)), ("finish", (index, reason)); then ("done", choices)."""
        metrics.prompt_tokens.inc(len(job.prompt_ids))
        choices = [_Choice() for _ in range(job.params.n)]
        key = None
        if cache is not None and job.params.greedy:
            key = (job.kind, job.model, tuple(job.prompt_ids), job.params.max_tokens, job.params.stop, job.params.n,
                   job.params.presence_penalty, job.params.frequency_penalty)
            hit = cache.get(key)
            (metrics.cache_misses if hit is None else metrics.cache_hits).inc()
            if hit is not None:
                metrics.ttft.observe(time.perf_counter() - started)
                for index, choice in enumerate(hit):
                    if choice.reasoning:
                        yield "piece", (index, "reasoning_content", choice.reasoning_text())
                    yield "piece", (index, "content", choice.text())
                    yield "finish", (index, choice.finish_reason)
                yield "done", hit
                return
        splitters = [ThinkSplitter(job.in_reasoning) if job.kind == "chat" else None for _ in choices]
        handle = engine.submit(job.adapter, job.prompt_ids, job.params)
        gone = asyncio.Event()  # set when the client disconnects
        watcher = asyncio.create_task(_cancel_on_disconnect(request, handle, gone))
        first = True
        try:
            async for delta in handle.deltas():
                if first:
                    metrics.ttft.observe(time.perf_counter() - started)
                    first = False
                choice, splitter = choices[delta.index], splitters[delta.index]
                metrics.completion_tokens.inc(delta.completion_tokens - choice.tokens)
                choice.tokens = delta.completion_tokens
                if splitter is None:
                    pieces = [("content", delta.text)] if delta.text else []
                else:
                    pieces = splitter.feed(delta.text) + (splitter.finish() if delta.finish_reason else [])
                for kind, text in pieces:
                    (choice.reasoning if kind == "reasoning_content" else choice.content).append(text)
                    yield "piece", (delta.index, kind, text)
                if delta.finish_reason:
                    choice.finish_reason = delta.finish_reason
                    yield "finish", (delta.index, delta.finish_reason)
        finally:
            handle.cancel()  # no-op when finished; frees the rows when the client went away
            watcher.cancel()
        if gone.is_set():
            return  # the client went away: nothing to answer or cache
        if any(c.finish_reason is None for c in choices):
            raise EngineError("the engine stopped before the answer was complete")
        if key is not None:
            cache.put(key, choices)
        yield "done", choices

    async def record(completion_id: str, job: _Job, choices: list[_Choice]) -> None:
        try:  # feedback capture must never fail the completion itself
            await asyncio.to_thread(store.record_completion, completion_id, job.model, job.messages,
                                    choices[0].text(), choices[0].reasoning_text())
        except Exception:
            log.exception("could not record completion %s in %s", completion_id, store.path)

    def usage(job: _Job, choices: list[_Choice]) -> dict[str, int]:
        completion = sum(c.tokens for c in choices)
        return {"prompt_tokens": len(job.prompt_ids), "completion_tokens": completion,
                "total_tokens": len(job.prompt_ids) + completion}

    async def respond(job: _Job, request: Request, started: float) -> Response:
        prefix = "chatcmpl-" if job.kind == "chat" else "cmpl-"
        completion_id, now = prefix + uuid.uuid4().hex, int(time.time())
        if job.stream:
            return _SSEResponse(stream(job, request, started, completion_id, now), media_type="text/event-stream",
                                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        choices: list[_Choice] = []
        try:
            async with contextlib.aclosing(run_job(job, request, started)) as events:
                async for event, value in events:
                    if event == "done":
                        choices = value
        except EngineError as err:
            raise APIError(500, str(err), "server_error", "generation_failed") from err
        if not choices:
            return Response(status_code=499)  # the client closed the connection (nginx's code); nobody reads this
        await record(completion_id, job, choices)
        if job.kind == "chat":
            listed = []
            for index, c in enumerate(choices):
                message = {"role": "assistant", "content": c.text()}
                if c.reasoning_text() is not None:
                    message["reasoning_content"] = c.reasoning_text()
                listed.append({"index": index, "message": message, "finish_reason": c.finish_reason,
                               "logprobs": None})
            body = {"id": completion_id, "object": "chat.completion", "created": now, "model": job.model,
                    "choices": listed, "usage": usage(job, choices)}
        else:
            body = {"id": completion_id, "object": "text_completion", "created": now, "model": job.model,
                    "choices": [{"index": i, "text": c.text(), "finish_reason": c.finish_reason, "logprobs": None}
                                for i, c in enumerate(choices)],
                    "usage": usage(job, choices)}
        return JSONResponse(body)

    async def stream(job: _Job, request: Request, started: float, completion_id: str, now: int):
        chat = job.kind == "chat"
        base = {"id": completion_id, "object": "chat.completion.chunk" if chat else "text_completion",
                "created": now, "model": job.model}

        def chunk(index: int, kind: str | None, text: str | None, finish: str | None) -> str:
            if chat:
                delta = {} if kind is None else {kind: text}
                if kind == "role":
                    delta = {"role": "assistant", "content": ""}
                choice = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": index, "text": text or "", "finish_reason": finish, "logprobs": None}
            return _sse({**base, "choices": [choice]})

        if chat:
            for index in range(job.params.n):
                yield chunk(index, "role", None, None)
        try:  # aclosing: a client leaving mid-stream closes run_job now, which cancels the rows
            async with contextlib.aclosing(run_job(job, request, started)) as events:
                async for event, value in events:
                    if event == "piece":
                        index, kind, text = value
                        yield chunk(index, kind, text, None)
                    elif event == "finish":
                        yield chunk(value[0], None, None, value[1])
                    else:
                        await record(completion_id, job, value)  # before [DONE]: the client may rate it at once
                        if job.include_usage:
                            yield _sse({**base, "choices": [], "usage": usage(job, value)})
        except EngineError as err:
            metrics.errors.labels("500", "generation_failed").inc()
            yield _sse(error_body(APIError(500, str(err), "server_error", "generation_failed")))
        yield _sse("[DONE]")

    # -- routes

    @app.post("/v1/chat/completions", summary="Chat completion (OpenAI-compatible)")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        started = time.perf_counter()  # rendering and tokenising run off the event loop: long prompts take a while
        return await respond(await asyncio.to_thread(chat_job, body), request, started)

    @app.post("/v1/completions", summary="Text completion (OpenAI-compatible; no chat template)")
    async def completions(body: CompletionRequest, request: Request):
        started = time.perf_counter()
        return await respond(await asyncio.to_thread(text_job, body), request, started)

    @app.get("/v1/models", summary="The model ids this server answers to")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "seektune"}
                                            for name in catalog.routes]}

    @app.post("/v1/feedback", summary="Rate a completion (up/down), optionally with a better answer")
    async def feedback(body: FeedbackRequest):
        try:
            await asyncio.to_thread(store.add_feedback, body.id, body.rating, body.correction, body.comment)
        except KeyError as err:
            raise APIError(404, f"No completion with id {body.id!r}.", code="completion_not_found", param="id") \
                from err
        except ValueError as err:
            raise APIError(400, str(err), code="invalid_value") from err
        return {"ok": True}

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health", summary="Liveness (no API key needed)")
    async def health():
        return {"status": "ok", "models": list(catalog.routes)}

    @app.get("/", include_in_schema=False)
    async def playground():
        index = STATIC_DIR / "index.html"
        if index.is_file():
            return FileResponse(index, media_type="text/html")
        return HTMLResponse("<!doctype html><title>seektune serve</title><p>The web playground is not installed "
                            "(seektune/serve/static/index.html is missing). The API is at <code>/v1</code>.</p>")

    if STATIC_DIR.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    app.add_middleware(Guard, settings=settings, metrics=metrics)
    return app


async def _cancel_on_disconnect(request: Request, handle, gone: asyncio.Event) -> None:
    """Cancel the handle's rows when the client disconnects (non-streaming requests too)."""
    try:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                gone.set()
                handle.cancel()
                return
    except Exception:  # the request is over; nothing to watch
        return


def serve(settings: ServeSettings) -> None:
    """`seektune serve ...`: build the app and run it with uvicorn until interrupted."""
    import uvicorn

    app = create_app(settings)
    catalog = app.state.catalog
    base_url = f"http://{settings.host}:{settings.port}"
    log.warning("serving %s as model ids %s%s", settings.target, ", ".join(catalog.routes),
                "; API key required" if settings.api_key else "")
    log.warning("playground: %s/   OpenAI API: %s/v1   metrics: %s/metrics   feedback: %s",
                base_url, base_url, base_url, settings.feedback_path())
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
