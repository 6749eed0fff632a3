"""Serving: an OpenAI-compatible API with batching, adapters, metrics and feedback capture.

    seektune serve runs/customer-service [--adapter name=RUN ...] [--host --port --api-key]

``app.py`` holds the routes (`create_app`, `serve`, `ServeSettings`), ``engine.py`` the
batched generation, ``feedback.py`` the SQLite store, ``static/`` the web playground.
Nothing is imported here, so ``seektune.serve.feedback`` loads without FastAPI or torch.
"""
