"""The OpenAI-compatible HTTP server: loads the model, builds the app from its routers, runs it.

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
the user for the key and sends it with each API call. `serve` answers only requests whose
``Host`` is the bound host or a loopback name (``--allowed-host`` adds others), and gives a
request body ``--body-timeout`` seconds to arrive before 408 (see ``guard.py``). ``/openapi.json``
documents every status, cap and model id of the running server (``openapi.py``).

With ``--rag INDEX`` (a ``seektune index`` directory, opened at start-up) every chat request is
answered from the index's passages: the last user message is the query, and its content becomes
``seektune.rag.prompt.with_passages(question, hits)`` (numbered passages, then the question) before
the chat template is applied. The response carries ``citations`` (see ``completion.py``); a
request turns retrieval off with ``"rag": false`` or asks for other ``"rag_k"`` passages (1-20).

Requests never name a file, a template or code: the request models keep only OpenAI's
sampling fields and seektune's ``rag`` / ``rag_k`` (unknown fields such as ``chat_template`` or
``tools`` are dropped, never acted on), and the ``model`` field only selects among the ids loaded
at start-up.

The app is assembled, not written here: `create_app` loads the engine and catalog
(``catalog.py``) into a `ServeState` (``state.py``), and `build_app` mounts the routers
(``routes/``) over that state, behind the error handlers (``errors.py``) and the request
guard (``guard.py``). Tests build the same app around a fake engine with `build_app`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path

from fastapi import APIRouter, FastAPI

from seektune.serve.errors import install_error_handlers
from seektune.serve.guard import Guard, default_allowed_hosts
from seektune.serve.openapi import install_openapi
from seektune.serve.retrieval import Retriever
from seektune.serve.routes import completions, feedback, health, models, playground
from seektune.serve.state import Metrics, ServeSettings, ServeState

__all__ = ["ROUTERS", "ServeSettings", "ServeState", "build_app", "create_app", "serve"]

log = logging.getLogger(__name__)

ROUTERS: tuple[APIRouter, ...] = (completions.router, models.router, feedback.router, health.router,
                                  playground.router)


@contextlib.asynccontextmanager
async def _engine_running(app: FastAPI):
    engine = app.state.serve.engine
    await engine.start()
    try:
        yield
    finally:
        await engine.stop()


def build_app(state: ServeState, routers: Iterable[APIRouter] = ROUTERS) -> FastAPI:
    """An app serving ``routers`` over ``state``: error handlers, the request guard, and the engine
    started and stopped with the app's lifespan."""
    routers = list(routers)
    app = FastAPI(title="seektune serve", version="1", lifespan=_engine_running,
                  description="OpenAI-compatible chat and completions for seektune runs, with feedback capture.")
    app.state.serve = state
    install_error_handlers(app)
    install_openapi(app)  # /openapi.json states the statuses, caps and model ids of this server
    for router in routers:
        app.include_router(router)
    if playground.router in routers:
        playground.mount_static(app)
    app.add_middleware(Guard, settings=state.settings, metrics=state.metrics)
    return app


def create_app(settings: ServeSettings) -> FastAPI:
    """Load the model and adapters, and build the app (the engine starts with the app's lifespan)."""
    from seektune.serve.catalog import default_allowed_run_dirs, load_hf_engine, load_vllm_engine

    metrics = Metrics()
    # the index first: a wrong --rag path fails in a second, not after the model has loaded
    retriever = Retriever.open(settings.rag_index, settings.rag_k) if settings.rag_index else None
    allowed = ([Path(d) for d in settings.allowed_run_dirs] if settings.allowed_run_dirs
               else default_allowed_run_dirs(settings.target))
    adapters = {name: Path(path) for name, path in settings.adapters.items()}
    variants = None
    if settings.glossary is not None:  # also before the model loads
        from seektune.glossary import enforced_variants

        if settings.engine != "hf":
            raise ValueError("--glossary is enforced by the hf engine's decoding; vllm serves without it")
        variants = enforced_variants(settings.glossary)
    if settings.engine == "vllm":
        engine, catalog = load_vllm_engine(settings.target, adapters, allowed, max_batch=settings.max_batch,
                                           trust_remote_code=settings.trust_remote_code)
    elif settings.engine == "hf":
        engine, catalog = load_hf_engine(settings.target, adapters, allowed, max_batch=settings.max_batch,
                                         batch_wait_ms=settings.batch_wait_ms, on_step=metrics.batch_size.observe,
                                         trust_remote_code=settings.trust_remote_code)
    else:
        raise ValueError(f"unknown engine {settings.engine!r}; choose hf or vllm")
    if variants:
        from seektune.glossary import ForbiddenVariants

        engine.constraint = ForbiddenVariants(engine.tokenizer, variants)
    return build_app(ServeState.create(settings, engine, catalog, metrics, retriever))


def serve(settings: ServeSettings) -> None:
    """`seektune serve ...`: build the app and run it with uvicorn until interrupted."""
    import dataclasses

    import uvicorn

    if not settings.allowed_hosts:  # a real server always checks Host (DNS rebinding); in-process apps may not
        settings = dataclasses.replace(settings, allowed_hosts=default_allowed_hosts(settings.host))
    app = create_app(settings)
    catalog = app.state.serve.catalog
    base_url = f"http://{settings.host}:{settings.port}"
    log.warning("serving %s as model ids %s%s", settings.target, ", ".join(catalog.routes),
                "; API key required" if settings.api_key else "")
    log.warning("playground: %s/   OpenAI API: %s/v1   metrics: %s/metrics   feedback: %s",
                base_url, base_url, base_url, settings.feedback_path())
    log.warning("answering Host %s", ", ".join(settings.allowed_hosts))
    if app.state.serve.retriever is not None:
        info = app.state.serve.retriever.info()
        log.warning("retrieval: %s (%d documents, %d chunks), %d passages per question", settings.rag_index,
                    info["documents"], info["chunks"], info["k"])
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
