"""The request guard in front of every route: API key, concurrency cap, body size cap, request metrics.

    app.add_middleware(Guard, settings=state.settings, metrics=state.metrics)   # what build_app does

With an API key set, every path but ``/health``, ``/`` and ``/static/*`` needs
``Authorization: Bearer <key>`` (401 otherwise), unknown paths, ``/docs`` and
``/openapi.json`` included, which is why this is middleware and not a route dependency.
Completion routes beyond ``max_concurrency`` get 429 at once; a body over
``max_body_bytes`` gets 413.

It is a plain ASGI middleware rather than ``BaseHTTPMiddleware`` because the latter
buffers and re-wraps streaming responses.
"""

from __future__ import annotations

import hmac
import time

from seektune.serve.errors import APIError, error_response
from seektune.serve.state import Metrics, ServeSettings

OPEN_PATHS = {"/health", "/"}  # and /static/*: the playground page must load before the user types the key
LIMITED_PATHS = {"/v1/chat/completions", "/v1/completions"}  # count against max_concurrency
ROUTE_LABELS = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/feedback", "/metrics", "/health", "/",
                "/docs", "/openapi.json"}


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
        return error_response(self.metrics, err, headers)

    async def _guarded(self, scope, receive, send, path):
        open_path = path in OPEN_PATHS or path.startswith("/static/")
        if self.settings.api_key and not open_path and not self._authorised(scope):
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
