"""The API's routes, one `APIRouter` per concern, each reading the app's `ServeState` through
`ServeStateDep` (``request.app.state.serve``), so each can be mounted on a bare app and tested alone.

    completions   POST /v1/chat/completions, POST /v1/completions (SSE when ``stream: true``)
    models        GET /v1/models
    feedback      POST /v1/feedback
    health        GET /health (no key needed), GET /metrics (Prometheus)
    playground    GET / and the files under /static (no key needed)

What every route shares lives outside them: the API key, the body size and concurrency caps
in ``guard.py`` (middleware, so unknown paths and /docs are guarded too), errors in OpenAI's
shape in ``errors.py``. ``app.build_app`` puts a state, the routers and those two together.
"""
