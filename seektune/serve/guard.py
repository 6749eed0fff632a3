"""The request guard in front of every route: Host, API key, body deadline and size, concurrency cap, metrics.

    app.add_middleware(Guard, settings=state.settings, metrics=state.metrics)   # what build_app does

With ``allowed_hosts`` set (``seektune serve`` always sets it: the bound host, ``localhost``,
``127.0.0.1`` and ``[::1]`` unless ``--allowed-host`` says otherwise), a request whose ``Host``
header (port ignored) is not among them gets 400: a web page on another origin that reaches a
local server by DNS rebinding sends its own name as ``Host``. With an API key set, every path
but ``/health``, ``/`` and ``/static/*`` needs ``Authorization: Bearer <key>`` (401
otherwise), unknown paths, ``/docs`` and ``/openapi.json`` included, which is why this is
middleware and not a route dependency.

A request body is read whole before the request takes a concurrency slot, within
``body_timeout_s`` (408 and the connection closed otherwise) and up to ``max_body_bytes``
(413), so a client that sends headers and then stalls, or trickles its body, never holds a
slot. Completion routes beyond ``max_concurrency`` get 429 with ``Retry-After`` at once. A
client that hangs up before its request is read is counted under status 499 (nginx's "client
closed request"), not 500.

It is a plain ASGI middleware rather than ``BaseHTTPMiddleware`` because the latter
buffers and re-wraps streaming responses.
"""

from __future__ import annotations

import asyncio
import hmac
import time

from seektune.serve.errors import APIError, error_response
from seektune.serve.state import Metrics, ServeSettings

OPEN_PATHS = {"/health", "/"}  # and /static/*: the playground page must load before the user types the key
LIMITED_PATHS = {"/v1/chat/completions", "/v1/completions"}  # count against max_concurrency
ROUTE_LABELS = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/feedback", "/metrics", "/health", "/",
                "/docs", "/openapi.json"}
CLIENT_CLOSED = 499  # the status label of a request whose client went away before it was read
RETRY_AFTER_S = "1"  # slots free as soon as a generation ends: retrying after a second is reasonable
ANY_HOST = "*"


def host_name(value: str) -> str:
    """``Host`` header or ``--allowed-host`` value -> the lower-case name without its port (IPv6 kept in [])."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[:value.find("]") + 1] if "]" in value else value
    if value.count(":") > 1:  # a bare IPv6 address, as --allowed-host ::1 may be given
        return f"[{value}]"
    return value.partition(":")[0]


def default_allowed_hosts(bound_host: str) -> list[str]:
    """The hosts `seektune serve` answers when no ``--allowed-host`` is given: its own and the loopback names."""
    return list(dict.fromkeys([host_name(bound_host), "localhost", "127.0.0.1", "[::1]"]))


class ClientGone(Exception):
    """The client disconnected before its request body was read."""


class Guard:
    """Plain ASGI middleware: Host check, API key, body deadline and size cap, concurrency cap, metrics."""

    def __init__(self, app, settings: ServeSettings, metrics: Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics
        self.in_flight = 0
        hosts = settings.allowed_hosts
        self.allowed_hosts = None if not hosts or ANY_HOST in hosts else {host_name(h) for h in hosts}

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
        except ClientGone:
            status = CLIENT_CLOSED
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)

    def _refuse(self, err: APIError, headers: dict[str, str] | None = None):
        return error_response(self.metrics, err, headers)

    async def _guarded(self, scope, receive, send, path):
        if self.allowed_hosts is not None:
            host = host_name(dict(scope["headers"]).get(b"host", b"").decode("latin-1"))
            if host not in self.allowed_hosts:
                response = self._refuse(APIError(
                    400, f"Host {host or '(none)'!r} is not served here; start the server with "
                         f"--allowed-host {host or 'NAME'} to accept it.", code="host_not_allowed", param="Host"))
                return await response(scope, receive, send)
        open_path = path in OPEN_PATHS or path.startswith("/static/")
        if self.settings.api_key and not open_path and not self._authorised(scope):
            response = self._refuse(APIError(401, "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
                                             code="invalid_api_key"), {"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        if scope["method"] in ("POST", "PUT", "PATCH"):  # the body first: a stalled upload never holds a slot
            receive = await self._buffered(scope, receive, send)
            if receive is None:
                return
        limited = path in LIMITED_PATHS
        if limited:
            if self.in_flight >= self.settings.max_concurrency:
                response = self._refuse(APIError(
                    429, f"The server is at its limit of {self.settings.max_concurrency} concurrent requests; "
                         "retry shortly.", "rate_limit_error", "rate_limit_exceeded"), {"Retry-After": RETRY_AFTER_S})
                return await response(scope, receive, send)
            self.in_flight += 1
            self.metrics.in_flight.set(self.in_flight)
        try:
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
        """Read the whole body (at most max_body_bytes, within body_timeout_s) and replay it; None if refused
        with 413/400/408. Raises `ClientGone` if the client hangs up first."""
        limit = self.settings.max_body_bytes
        too_large = APIError(413, f"Request body is larger than {limit} bytes.", code="request_too_large")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    await self._refuse(too_large)(scope, receive, send)
                    return None
            except ValueError:
                invalid = APIError(400, "Invalid Content-Length header.", code="invalid_content_length",
                                   param="Content-Length")
                await self._refuse(invalid)(scope, receive, send)
                return None
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):  # for the whole body: trickling is stalling
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        await self._refuse(too_large)(scope, receive, send)
                        return None
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            # Connection: close, or the server would read the rest of the stalled body as the next request
            timed_out = APIError(408, f"The request body did not arrive within {self.settings.body_timeout_s:g} s.",
                                 code="request_timeout")
            await self._refuse(timed_out, {"Connection": "close"})(scope, receive, send)
            return None
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        return replayed
