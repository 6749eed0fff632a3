"""What one server holds, in one object every route reads: settings, engine, catalog, store, metrics, cache,
retriever.

    state = ServeState.create(settings, engine, catalog)   # engine: HFEngine, VLLMEngine or a test's fake
    app.state.serve = state                                # what `build_app` does
    async def route(state: ServeStateDep): ...             # how a route reaches it

Routes get the state through the `get_state` dependency (``request.app.state.serve``), never
from a closure, so any router can be mounted on a bare app over a state built around a fake
engine and tested alone.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from seektune.models.registry import opens_think
from seektune.runs import RunDir
from seektune.serve.catalog import Catalog
from seektune.serve.feedback import FeedbackStore
from seektune.serve.generation import Engine
from seektune.serve.retrieval import Retriever

DEFAULT_FEEDBACK_DB = Path("seektune-feedback.sqlite")  # serving a model rather than a run: in the cwd


@dataclass
class ServeSettings:
    """Everything `seektune serve` takes; see ``seektune/serve/app.py``'s docstring."""

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
    body_timeout_s: float = 10.0  # the whole request body must arrive within this; else 408 (slots are never held)
    cache_size: int = 0  # exact-match response cache entries (temperature 0 only); 0 = off
    cache_ttl_s: float = 600
    feedback_db: Path | None = None  # default <run>/feedback.sqlite for a run, else ./seektune-feedback.sqlite
    engine: Literal["hf", "vllm"] = "hf"
    allowed_run_dirs: list[Path] | None = None  # adapters must resolve under one of these; default: see
    # catalog.default_allowed_run_dirs (a served run's parent directory)
    allowed_hosts: list[str] | None = None  # Host header names answered ("*": any); None: no check here, but
    # `serve()` (so `seektune serve`) fills in guard.default_allowed_hosts(host)
    trust_remote_code: bool = False  # let a served run's recipe switch model.trust_remote_code on
    rag_index: Path | None = None  # a `seektune index` directory: chat requests are answered from its passages
    rag_k: int = 4  # passages per question (a request's rag_k overrides it)
    glossary: Path | None = None  # a glossary file: its forbidden variants are never generated (hf engine)

    def feedback_path(self) -> Path:
        if self.feedback_db is not None:
            return Path(self.feedback_db)
        run = RunDir(self.target)
        return run.feedback_db if run.is_run() else DEFAULT_FEEDBACK_DB


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

    def watch(self, engine: Engine) -> None:
        """Read the engine's own counters at every scrape."""
        self.queue_depth.set_function(lambda: engine.queue_depth)
        self.active.set_function(lambda: engine.active_requests)
        self.cancelled.set_function(lambda: engine.cancelled_rows)


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


@dataclass
class ServeState:
    """One server: what it was started with and what it holds. Routes read it; only the engine,
    the store and the metrics change while it runs."""

    settings: ServeSettings
    engine: Engine
    catalog: Catalog
    store: FeedbackStore
    metrics: Metrics
    cache: ResponseCache | None = None
    retriever: Retriever | None = None  # --rag: the index chat requests are grounded in (retrieval.py)
    created: int = field(default_factory=lambda: int(time.time()))  # `created` of every model in /v1/models
    reasoning: bool = field(init=False, default=False)  # the served template opens <think> (set from the engine)

    def __post_init__(self) -> None:
        self.metrics.watch(self.engine)
        # an R1-style template (it opens <think> for every answer): requests that give no sampling get DeepSeek's
        self.reasoning = opens_think(self.engine.tokenizer)

    @classmethod
    def create(cls, settings: ServeSettings, engine: Engine, catalog: Catalog,
               metrics: Metrics | None = None, retriever: Retriever | None = None) -> ServeState:
        """The state for a loaded engine: the feedback store and response cache the settings ask for, and
        the retriever opened from ``settings.rag_index`` (by `create_app`, before the model loads)."""
        cache = ResponseCache(settings.cache_size, settings.cache_ttl_s) if settings.cache_size > 0 else None
        return cls(settings, engine, catalog, FeedbackStore(settings.feedback_path()), metrics or Metrics(), cache,
                   retriever)

    @property
    def tokenizer(self):
        return self.engine.tokenizer


def state_of(request: Request) -> ServeState:
    """The `ServeState` of the app serving ``request``."""
    try:
        return request.app.state.serve
    except AttributeError:
        raise RuntimeError("this app has no seektune ServeState: build it with seektune.serve.app.build_app, "
                           "or set app.state.serve") from None


async def get_state(request: Request) -> ServeState:
    """The FastAPI dependency behind `ServeStateDep` (async: a sync one would run in the thread pool)."""
    return state_of(request)


ServeStateDep = Annotated[ServeState, Depends(get_state)]
