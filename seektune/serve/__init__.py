"""Serving: an OpenAI-compatible API with batching, adapters, metrics and feedback capture.

    seektune serve runs/customer-service [--adapter name=RUN ...] [--host --port --api-key]

``app.py`` assembles the server (`create_app`, `build_app`, `serve`) from ``routes/`` (one
APIRouter per concern) over one ``state.ServeState`` (settings, engine, catalog, feedback
store, metrics, cache). ``completion.py`` turns a request into an answer, ``guard.py`` checks
the key and limits, ``errors.py`` shapes errors. ``catalog.py`` loads the model and adapters
from run directories; ``engine.py`` batches generation behind ``generation.Engine``;
``feedback.py`` is the SQLite store; ``static/`` the web playground.
Nothing is imported here, so ``seektune.serve.feedback`` loads without FastAPI or torch.
"""
