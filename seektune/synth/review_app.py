"""The review page: a local web app where people accept, edit or reject synthesised question/answer pairs.

    seektune review runs/cs-synth                       # <run>/synth/review.sqlite at http://127.0.0.1:8010/
    seektune review runs/cs-synth/synth/review.sqlite --port 8011 --token $TOKEN --open

Routes: ``GET /`` the page (``templates/review.html.j2``) with its files ``GET /static/page_api.js``,
``/static/review.js`` and ``/static/review.css``; ``GET /api/pairs?status=&document=&warning=`` (the pairs of a filter
without their chunks, the counts, and the documents and warning codes to filter by);
``GET /api/pairs/{id}`` (one pair, chunk and support spans included); ``POST /api/pairs/{id}/decision``
with ``{status, reviewer, version, question?, answer?, reason?}`` (the updated pair; 409 when
``version`` is stale, i.e. another tab decided first; 400 for a decision the store refuses; 404 for
an unknown id). Errors are ``{"detail": "..."}``.

The posture is `seektune serve`'s (``serve/guard.py``): requests whose ``Host`` is not an allowed
name get 400 (DNS rebinding), with a token every path but the page and its two files needs
``Authorization: Bearer <token>`` (401), a POST must be ``Content-Type: application/json`` (a
cross-site HTML form cannot send that) from no other origin (403), with a body of at most 64 KB
(413). Every response carries a Content-Security-Policy that allows only this server's own
script and style (no inline script at all), ``nosniff`` and no framing. Document and teacher
text is data: Jinja2 autoescapes it and the page's script sets it with ``textContent`` only.
Serve's own ``Guard`` is tied to its settings and Prometheus metrics, so this small guard stands
beside it and shares its Host parsing.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import webbrowser
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from seektune.data.pages import render
from seektune.data.review import MAX_TEXT, STATUSES, STORE_SUFFIXES, ReviewError, ReviewStore, StaleDecision
from seektune.runs import RunDir
from seektune.serve.guard import ANY_HOST, default_allowed_hosts, host_name

__all__ = ["ReviewGuard", "build_review_app", "page_url", "resolve_store", "serve_review", "validation_error"]

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent.parent / "templates"
STATIC_FILES = {"page_api.js": "text/javascript; charset=utf-8",  # the JSON helper both local pages share
                "review.js": "text/javascript; charset=utf-8", "review.css": "text/css; charset=utf-8"}
OPEN_PATHS = {"/"} | {f"/static/{name}" for name in STATIC_FILES}  # the page loads before the user types the token
MAX_BODY_BYTES = 64 * 1024
BODY_TIMEOUT_S = 10.0
MAX_REVIEWER = 200
QUESTION_PREVIEW = 160  # characters of a question in the list (the page fetches the pair for the rest)
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class Decision(BaseModel):
    """The body of ``POST /api/pairs/{id}/decision``; the store checks what depends on the status."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["accepted", "edited", "rejected", "pending"]
    reviewer: str = Field(max_length=MAX_REVIEWER, description="Who decides (the page remembers it).")
    version: int = Field(ge=0, description="The pair's version the page showed; a newer one means 409.")
    question: str | None = Field(None, max_length=MAX_TEXT, description="The edited question (status edited).")
    answer: str | None = Field(None, max_length=MAX_TEXT, description="The edited answer (status edited).")
    reason: str | None = Field(None, max_length=MAX_TEXT, description="Why the pair is rejected (status rejected).")


# ------------------------------------------------------------------ routes (over app.state.review)

def get_store(request: Request) -> ReviewStore:
    return request.app.state.review


StoreDep = Annotated[ReviewStore, Depends(get_store)]
router = APIRouter()


@router.get("/", include_in_schema=False)
def page(store: StoreDep, request: Request) -> HTMLResponse:
    html = render("review.html.j2", store_name=store.path.name, run_name=store.path.parent.parent.name,
                  token_required=request.app.state.token_required)
    return HTMLResponse(html)


@router.get("/static/{name}", include_in_schema=False)
def static_file(name: str) -> FileResponse:
    if name not in STATIC_FILES:  # a fixed list: the request never names a path
        raise HTTPException(404, f"no file {name!r}")
    return FileResponse(TEMPLATES / name, media_type=STATIC_FILES[name])


def _summary(pair) -> dict[str, Any]:
    question = pair.final_question
    return {"id": pair.id, "position": pair.position, "document": pair.document, "origin": pair.origin,
            "kind": pair.kind, "status": pair.status, "warnings": pair.warnings, "version": pair.version,
            "reviewer": pair.reviewer,
            "question": question if len(question) <= QUESTION_PREVIEW else question[:QUESTION_PREVIEW] + "…"}


@router.get("/api/pairs")
def list_pairs(
    store: StoreDep,
    status: Annotated[Literal["pending", "accepted", "edited", "rejected"] | None, Query()] = None,
    document: Annotated[str | None, Query(max_length=1000)] = None,
    warning: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """The pairs of one filter (without chunks), the counts of the whole store, and what to filter by."""
    everything = store.pairs()
    chosen = [p for p in everything if (not status or p.status == status) and (not document or p.document == document)
              and (not warning or warning in p.warnings)]
    return {"pairs": [_summary(p) for p in chosen], "counts": store.counts(), "total": len(everything),
            "documents": sorted({p.document for p in everything}),
            "warnings": sorted({w for p in everything for w in p.warnings}), "statuses": list(STATUSES)}


def _pair_or_404(store: ReviewStore, pair_id: str):
    try:
        return store.get(pair_id)
    except ReviewError:
        raise HTTPException(404, f"no pair {pair_id!r} in this review store") from None


@router.get("/api/pairs/{pair_id:path}")
def get_pair(pair_id: str, store: StoreDep) -> dict[str, Any]:
    return _pair_or_404(store, pair_id).public()


@router.post("/api/pairs/{pair_id:path}/decision")
def decide(pair_id: str, decision: Decision, store: StoreDep) -> dict[str, Any]:
    _pair_or_404(store, pair_id)
    try:
        pair = store.decide(pair_id, decision.status, decision.reviewer, version=decision.version,
                            question=decision.question, answer=decision.answer, reason=decision.reason)
    except StaleDecision as exc:
        current = store.get(pair_id).public()
        return JSONResponse({"detail": f"{exc}", "pair": current}, status_code=409)
    except ReviewError as exc:
        raise HTTPException(400, str(exc)) from None
    return pair.public()


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 naming the field, as `seektune serve` answers, instead of FastAPI's 422 list."""
    problems = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        where = ".".join(str(part) for part in (loc[1:] if loc[:1] in (["body"], ["query"], ["path"]) else loc))
        problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return JSONResponse({"detail": "; ".join(problems)}, status_code=400)


# ------------------------------------------------------------------ the request guard

class ReviewGuard:
    """Plain ASGI middleware: Host check, bearer token, JSON-only same-origin POSTs under a size cap, and the
    security headers on every response (refusals included)."""

    def __init__(self, app, *, token: str | None, allowed_hosts: list[str] | None,
                 max_body_bytes: int = MAX_BODY_BYTES, body_timeout_s: float = BODY_TIMEOUT_S,
                 open_paths: set[str] = OPEN_PATHS, what: str = "review page", cookie: str | None = None):
        """``cookie``: the name of a cookie that may carry the token instead of the header (the studio sets it
        SameSite=Strict, so frames of the run's own pages load; a cross-site request never carries it)."""
        self.app, self.token, self.open_paths, self.what, self.cookie = app, token, open_paths, what, cookie
        self.allowed_hosts = None if not allowed_hosts or ANY_HOST in allowed_hosts else {
            host_name(h) for h in allowed_hosts}
        self.max_body_bytes, self.body_timeout_s = max_body_bytes, body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()
                    if name.encode() not in present]
            await send(message)

        refusal = self._refusal(scope)
        if refusal is None and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            receive, refusal = await self._buffered(scope, receive)
        if refusal is not None:
            status, message, headers = refusal
            return await JSONResponse({"detail": message}, status, headers)(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope) -> tuple[int, str, dict[str, str] | None] | None:
        headers = dict(scope["headers"])
        if self.allowed_hosts is not None:
            host = host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.allowed_hosts:
                return 400, (f"Host {host or '(none)'!r} is not served here (DNS rebinding guard); open the page "
                             f"at an allowed name: {', '.join(sorted(self.allowed_hosts))}."), None
        if self.token and scope["path"] not in self.open_paths:
            expected = f"Bearer {self.token}".encode()
            if not hmac.compare_digest(headers.get(b"authorization", b""), expected) and not self._cookie_ok(headers):
                return 401, f"This {self.what} needs its token: send 'Authorization: Bearer <token>'.", {
                    "WWW-Authenticate": "Bearer"}
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return None
        origin = headers.get(b"origin")
        if origin is not None and self.allowed_hosts is not None:
            origin_host = host_name(origin.decode("latin-1").partition("://")[2])
            if origin_host not in self.allowed_hosts:
                return 403, f"Requests from origin {origin.decode('latin-1')!r} are not accepted.", None
        content_type = headers.get(b"content-type", b"").decode("latin-1").partition(";")[0].strip().lower()
        if content_type != "application/json":
            return 415, "Send the body as JSON with 'Content-Type: application/json'.", None
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return 400, "Invalid Content-Length header.", None
            if int(declared) > self.max_body_bytes:
                return 413, f"Request body is larger than {self.max_body_bytes} bytes.", None
        return None

    def _cookie_ok(self, headers: dict[bytes, bytes]) -> bool:
        if not self.cookie:
            return False
        from http.cookies import CookieError, SimpleCookie

        try:
            jar = SimpleCookie(headers.get(b"cookie", b"").decode("latin-1"))
        except CookieError:
            return False
        given = jar[self.cookie].value if self.cookie in jar else ""
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def _buffered(self, scope, receive):
        """Read the whole body (a cap whatever Content-Length said, and a deadline) and replay it."""
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return receive, (400, "The client went away.", None)
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    if size > self.max_body_bytes:
                        return receive, (413, f"Request body is larger than {self.max_body_bytes} bytes.", None)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            return receive, (408, f"The request body did not arrive within {self.body_timeout_s:g} s.",
                             {"Connection": "close"})
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        return replayed, None


# ------------------------------------------------------------------ building and serving

def build_review_app(store_path: Path, *, token: str | None = None, allowed_hosts: list[str] | None = None
                     ) -> FastAPI:
    """The review app over an existing store (a ReviewError if ``store_path`` is not one). ``allowed_hosts``
    defaults to the loopback names; ``["*"]`` answers any Host."""
    store = ReviewStore(store_path, create=False)
    app = FastAPI(title="seektune review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.review = store
    app.state.token_required = bool(token)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(router)
    app.add_middleware(ReviewGuard, token=token or None,
                       allowed_hosts=allowed_hosts if allowed_hosts is not None else default_allowed_hosts("127.0.0.1"))
    return app


def resolve_store(run_or_store: str | Path) -> Path:
    """A run directory's review store, or a store path itself; a ReviewError when there is none."""
    path = Path(run_or_store)
    store = path if path.suffix.lower() in STORE_SUFFIXES else RunDir(path).review_store
    if not store.is_file():
        raise ReviewError(f"no review store at {store}: run `seektune synth RECIPE` first")
    return store


def page_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def serve_review(run_or_store: Path, host: str = "127.0.0.1", port: int = 8010, token: str | None = None,
                 open_browser: bool = False) -> None:
    """`seektune review RUN`: serve the review page for a run's store until interrupted."""
    import uvicorn

    store_path = resolve_store(run_or_store)
    app = build_review_app(store_path, token=token, allowed_hosts=default_allowed_hosts(host))
    counts = app.state.review.counts()
    url = page_url(host, port)
    log.warning("reviewing %s: %d pairs (%s)", store_path, sum(counts.values()),
                ", ".join(f"{n} {status}" for status, n in counts.items()))
    log.warning("review page: %s%s", url, "   (token required)" if token else "")
    if open_browser:
        # the token travels in the fragment, which the browser never sends; the page keeps it and drops it
        threading.Timer(1.0, webbrowser.open, [url + (f"#token={token}" if token else "")]).start()
    uvicorn.run(app, host=host, port=port, log_level="warning")
