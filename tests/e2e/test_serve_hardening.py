"""Stalled, abandoned and foreign-Host requests against a live uvicorn server on 127.0.0.1.

    OMP_NUM_THREADS=1 pytest -q tests/e2e/test_serve_hardening.py

The server runs the real app (`build_app`) over the unit tests' fake engine, so what is tested
is the socket handling: ``max_concurrency`` uploads that send headers with ``Content-Length:
500`` and then 5 bytes must not lock other clients out, must end in 408 with the connection
closed after ``body_timeout_s``, and a client that hangs up mid-upload is counted under 499. What
does hold a slot is a generation: a held fake generation shows 429 (with ``Retry-After``) at once.
Every wait is a deadline that fails naming what never happened; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn

from seektune.serve.app import ROUTERS, build_app
from seektune.serve.generation import Delta, GenerationHandle
from seektune.serve.guard import default_allowed_hosts
from tests.e2e.test_serve import DEADLINE_S, HELLO, wait_for
from tests.unit.test_serve_routes import REPLY, FakeEngine, make_state

BODY_TIMEOUT_S = 1.0
SLOTS = 2


class HeldEngine(FakeEngine):
    """The fake engine, but a generation stays open until `finish_all` (called from any thread)."""

    def __init__(self):
        super().__init__()
        self.handles: list[GenerationHandle] = []

    def submit(self, adapter, prompt_ids, params) -> GenerationHandle:
        handle = GenerationHandle("held", adapter, list(prompt_ids), params, asyncio.get_running_loop())
        self.handles.append(handle)
        return handle

    def finish_all(self) -> None:
        for handle in self.handles:
            for index in range(handle.params.n):
                handle.push(Delta(index, REPLY, "stop", 1))
            handle.push(None)
        self.handles.clear()


class FakeLiveServer:
    """build_app over the fake engine, served by uvicorn in a daemon thread on a free 127.0.0.1 port."""

    def __init__(self, state):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.state = state
        self.server = uvicorn.Server(uvicorn.Config(build_app(state, ROUTERS), host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), "uvicorn to start")
        assert self.server.started, "the server thread exited before it started listening"
        self.url = f"http://127.0.0.1:{self.port}"

    def requests(self, status: int, route: str = "/v1/chat/completions") -> float:
        return self.state.metrics.registry.get_sample_value(
            "seektune_requests_total", {"route": route, "status": str(status)}) or 0.0

    def stall(self, sent: bytes = b'{"mo') -> socket.socket:
        """A connection that promises a 500-byte body and sends 5 bytes of it."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE_S)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 500\r\n\r\n" + sent)
        return sock

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=DEADLINE_S)
        assert not self.thread.is_alive(), "the server did not shut down"


@pytest.fixture
def live(tmp_path):
    server = FakeLiveServer(make_state(tmp_path, max_concurrency=SLOTS, body_timeout_s=BODY_TIMEOUT_S,
                                       allowed_hosts=default_allowed_hosts("127.0.0.1")))
    yield server
    server.stop()


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout is the deadline)."""
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def test_stalled_uploads_hold_no_slot_and_end_in_408(live):
    stalled = [live.stall(b'{"mo') for _ in range(SLOTS)]
    try:
        wait_for(lambda: live.state.engine.running, "the engine to start")
        # every slot's worth of stalled uploads is open: a normal request is still answered, well inside
        # the body timeout plus its generation (the httpx timeout is only the deadline of a hung test)
        answer = httpx.post(f"{live.url}/v1/chat/completions", timeout=BODY_TIMEOUT_S + DEADLINE_S,
                            json={"model": "fake-model", "messages": HELLO, "temperature": 0})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == REPLY
        assert live.requests(429) == 0
        for sock in stalled:  # then each stalled upload is answered 408 and its connection closed
            received = read_until_closed(sock)
            assert received.startswith(b"HTTP/1.1 408 "), received[:200]
            assert b'"code":"request_timeout"' in received
    finally:
        for sock in stalled:
            sock.close()
    wait_for(lambda: live.requests(408) == SLOTS, f"{SLOTS} requests counted under 408")
    assert live.requests(500) == 0
    assert live.state.metrics.registry.get_sample_value("seektune_in_flight_requests") == 0


def test_a_trickled_body_is_cut_off_at_the_deadline(live):
    """A body sent a byte at a time never completes within body_timeout_s: the deadline covers the whole body."""
    sock = live.stall(b"{")
    try:
        received = b""
        for _ in range(int(DEADLINE_S / 0.1)):  # a byte every 0.1 s until the server hangs up (or the test's deadline)
            try:
                sock.sendall(b" ")
            except OSError:  # the server closed the connection after its 408
                break
            sock.settimeout(0.1)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            received += chunk
            if not chunk or received.startswith(b"HTTP/1.1 408 "):
                break
        assert received.startswith(b"HTTP/1.1 408 "), received[:200]
    finally:
        sock.close()
    wait_for(lambda: live.requests(408) == 1, "the trickled request counted under 408")


def test_a_client_that_hangs_up_mid_upload_is_counted_as_499(live):
    live.stall().close()
    wait_for(lambda: live.requests(499) == 1, "the abandoned upload counted under 499")
    assert live.requests(500) == 0


def test_a_foreign_host_header_is_refused(live):
    refused = httpx.get(f"{live.url}/health", headers={"Host": f"rebind.evil.example:{live.port}"}, timeout=DEADLINE_S)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "host_not_allowed"
    assert httpx.get(f"http://localhost:{live.port}/health", timeout=DEADLINE_S).status_code == 200


def test_a_generation_holds_its_slot_and_the_next_request_gets_429_at_once(tmp_path):
    engine = HeldEngine()
    live = FakeLiveServer(make_state(tmp_path, engine, max_concurrency=1, body_timeout_s=BODY_TIMEOUT_S))
    body = {"model": "fake-model", "messages": HELLO, "temperature": 0}

    def post():
        return httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=DEADLINE_S)

    try:
        with ThreadPoolExecutor(1) as pool:
            holder = pool.submit(post)
            wait_for(lambda: engine.handles, "the holder's generation to start")
            refused = post()
            assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert engine.handles, "the 429 came only after the holder left"
            engine.finish_all()
            assert holder.result(timeout=DEADLINE_S).status_code == 200
            wait_for(lambda: live.state.metrics.registry.get_sample_value("seektune_in_flight_requests") == 0,
                     "the holder's slot to be released")
            after = pool.submit(post)  # the slot is free again
            wait_for(lambda: engine.handles, "the next generation to start")
            engine.finish_all()
            assert after.result(timeout=DEADLINE_S).status_code == 200
    finally:
        engine.finish_all()
        live.stop()
