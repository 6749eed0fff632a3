"""`seektune studio`: one local web app to write a recipe, launch and watch runs, read reports, compare, chat
and export, for the people who will not write YAML.

    seektune studio --data examples                 # http://127.0.0.1:8020/ over ./runs
    seektune studio --runs-dir runs --port 8021 --api-key $KEY --max-jobs 2

Everything the page does is a JSON route (documented at ``/docs``, offline) and every job is the
`seektune` command a user would type (shown on the page), so nothing here is out of the CLI's reach:

``GET /api/runs`` (each run: status, objective, method, key metrics tuned vs base, age) ·
``GET /api/runs/{name}`` (data card figures, checkpoints, exports, progress, jobs, feedback and review
counts, recipe) · ``GET /api/runs/{name}/report`` and ``/card`` (the run's own HTML pages, sandboxed) ·
``POST /api/runs/{name}/chat`` · ``GET /api/compare?runs=a&runs=b`` · ``GET /api/schema`` (the recipe's
JSON schema, from the same pydantic models as the CLI) · ``GET /api/examples`` and ``/api/examples/{id}`` ·
``POST /api/recipes/validate`` · ``POST /api/uploads`` · ``POST /api/data/preview`` · ``POST /api/jobs``,
``GET /api/jobs``, ``GET /api/jobs/{id}``, ``POST /api/jobs/{id}/cancel``, ``GET /api/jobs/{id}/events``
(server-sent events: log lines, training progress and loss points, status).

The security posture is `seektune review`'s guard (``synth/review_app.py``): Host check against DNS
rebinding, an optional bearer key on everything but the page and its two files, JSON-only same-origin
POSTs under a size cap, a Content-Security-Policy with no inline script; run names, file names, logs and
data rows reach the page as JSON and are set with ``textContent``. Files are read only under the runs
directory and the ``--data`` paths; a request names a run, never a path outside those.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import webbrowser
from collections.abc import AsyncIterator
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from seektune.data.pages import render
from seektune.serve.guard import default_allowed_hosts
from seektune.studio.catalog import Catalog, StudioError, read_progress
from seektune.studio.jobs import TERMINAL, JobError, JobNotFound, JobRunner, JobStore
from seektune.synth.review_app import ReviewGuard, page_url, validation_error

__all__ = ["build_studio_app", "serve_studio"]

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent.parent / "templates"
STATIC_FILES = {"page_api.js": "text/javascript; charset=utf-8",  # the JSON helper both local pages share
                "studio.js": "text/javascript; charset=utf-8", "studio.css": "text/css; charset=utf-8"}
MAX_BODY_BYTES = 16 * 1024 * 1024  # an uploaded data file travels as JSON text
MAX_UPLOAD_CHARS = 12 * 1024 * 1024
UPLOAD_SUFFIXES = {".jsonl", ".json", ".csv", ".tsv", ".txt", ".md"}
PREVIEW_ROWS = 5
PREVIEW_REJECTS = 50
EVENT_POLL_S = 0.5
LOG_CHUNK = 64 * 1024
LOG_TAIL = 256 * 1024  # what a page opened on a long log receives of it (the log file keeps everything)
# the run's own pages are self-contained (inline style, data: images); shown in a sandboxed frame, no script
PAGE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; sandbox; "
            "frame-ancestors 'self'")


class RecipeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=64, description="The run's name: its directory under the runs directory.")
    recipe: str = Field(max_length=256 * 1024, description="The recipe as YAML (output_dir is set from name).")


class SetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    recipe: str = Field(max_length=256 * 1024, description="The recipe as YAML.")
    set: dict[str, str] = Field(max_length=200, description="Dotted keys and values, as the CLI's key=value "
                                "overrides (values read as YAML scalars; an empty value removes the key).")


class UploadBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(max_length=200, description="The file's name; its suffix says how it is read.")
    content: str = Field(max_length=MAX_UPLOAD_CHARS, description="The file's text (UTF-8).")


class PreviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(max_length=4096, description="A data file or directory under the runs directory, an upload "
                      "or a --data path.")
    recipe: str | None = Field(None, max_length=256 * 1024, description="The recipe being written: its data.format, "
                               "columns, meta_fields and system_prompt say how rows are read (as prepare reads them).")


class JobBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=64, description="The run.")
    stage: Literal["run", "prepare", "train", "tune", "eval", "export", "feedback", "update"] = Field(
        "run", description="run / prepare / train / tune take the recipe; eval, export, feedback (export the "
        "feedback `seektune serve` recorded) and update (train on that feedback) act on the run.")
    recipe: str | None = Field(None, max_length=256 * 1024, description="The recipe YAML (run, prepare, train).")
    to: str | None = Field(None, max_length=16, description="export: merged, int8, onnx or gguf; feedback: sft "
                           "or dpo.")


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[dict[str, str]] = Field(min_length=1, max_length=64, description="The conversation so far "
                                           "[{role, content}], ending with the user's turn.")
    max_new_tokens: int = Field(128, ge=1, le=1024)


COOKIE = "seektune_studio"
EXPORT_TARGETS = ("merged", "int8", "onnx", "gguf")
FEEDBACK_TARGETS = ("sft", "dpo")


# ------------------------------------------------------------------ state

class Studio:
    """What the routes share: the catalog, the jobs and one loaded chat model."""

    def __init__(self, catalog: Catalog, runner: JobRunner):
        self.catalog, self.runner, self.store = catalog, runner, runner.store
        self.chat_lock = threading.Lock()
        self.chat_model: tuple[str, Any, Any, str | None] | None = None

    def jobs_of(self, name: str) -> list:
        return self.store.jobs(run=name)

    def reply(self, name: str, messages: list[dict[str, str]], max_new_tokens: int) -> str:
        from seektune.chat import load_for_chat, reply

        run = self.catalog.run_dir(name)
        if not run.is_trained():
            raise StudioError(f"run {name!r} has no trained model yet", 409)
        with self.chat_lock:  # one model in memory: the last run chatted with
            if self.chat_model is None or self.chat_model[0] != name:
                self.chat_model = None
                model, tokenizer, system = load_for_chat(str(run.path))
                self.chat_model = (name, model, tokenizer, system)
            _, model, tokenizer, system = self.chat_model
            turns = [m for m in messages if m.get("role") in ("user", "assistant")]
            if not turns or turns[-1]["role"] != "user":
                raise StudioError("the conversation must end with the user's turn")
            prompt = ([{"role": "system", "content": system}] if system else []) + [
                {"role": m["role"], "content": m.get("content", "")} for m in turns]
            return reply(model, tokenizer, prompt, max_new_tokens=max_new_tokens, stream=False)


def studio_of(request: Request) -> Studio:
    return request.app.state.studio


StudioDep = Annotated[Studio, Depends(studio_of)]
router = APIRouter()


def _refuse(exc: Exception) -> HTTPException:
    status = exc.status if isinstance(exc, StudioError) else 404 if isinstance(exc, JobNotFound) else 409
    return HTTPException(status, str(exc))


# ------------------------------------------------------------------ the page

@router.get("/", include_in_schema=False)
def page(request: Request) -> HTMLResponse:
    studio: Studio = request.app.state.studio
    return HTMLResponse(render("studio.html.j2", runs_dir=str(studio.catalog.runs_dir),
                               token_required=request.app.state.token_required))


@router.get("/static/{name}", include_in_schema=False)
def static_file(name: str) -> FileResponse:
    if name not in STATIC_FILES:  # a fixed list: the request never names a path
        raise HTTPException(404, f"no file {name!r}")
    return FileResponse(TEMPLATES / name, media_type=STATIC_FILES[name])


def _type_name(schema: dict[str, Any]) -> str:
    return schema.get("type") or " | ".join(a.get("type", "object") for a in schema.get("anyOf", []))


@router.get("/docs", include_in_schema=False)
def docs(request: Request) -> HTMLResponse:
    """The API, from the app's own OpenAPI document, as a plain page (no script from a CDN: it works offline)."""
    spec = request.app.openapi()
    routes = []
    for path, methods in spec.get("paths", {}).items():
        for method, op in methods.items():
            body = (((op.get("requestBody") or {}).get("content") or {}).get("application/json") or {}).get("schema")
            body_name = (body or {}).get("$ref", "").rsplit("/", 1)[-1] or None
            fields = (spec.get("components", {}).get("schemas", {}).get(body_name) or {}).get("properties", {})
            routes.append({"method": method.upper(), "path": path, "summary": op.get("summary", ""),
                           "description": op.get("description", ""),
                           "params": [(p["name"], p.get("in", ""), (p.get("schema") or {}).get("type", ""))
                                      for p in op.get("parameters", [])],
                           "body": [(k, _type_name(v), v.get("description", "")) for k, v in fields.items()]})
    return HTMLResponse(render("studio_docs.html.j2", routes=routes))


# ------------------------------------------------------------------ recipes and data

@router.get("/api/schema")
def schema() -> dict[str, Any]:
    """The recipe's JSON schema: the form is generated from it, as the CLI validates against the same models."""
    from seektune.recipe import Recipe

    return Recipe.model_json_schema()


@router.get("/api/examples")
def examples(studio: StudioDep) -> dict[str, Any]:
    """Example recipes found under the --data paths."""
    return {"examples": [e["id"] for e in studio.catalog.examples()]}


@router.get("/api/examples/{example_id:path}")
def example(example_id: str, studio: StudioDep) -> dict[str, str]:
    """One example recipe as YAML, its relative paths made absolute."""
    try:
        return {"id": example_id, "recipe": studio.catalog.example_text(example_id)}
    except StudioError as exc:
        raise _refuse(exc) from None


@router.post("/api/recipes/validate")
def validate(body: RecipeBody, studio: StudioDep) -> dict[str, Any]:
    """Validate a recipe as `seektune run` would; 400 with the CLI's message (e.g. "did you mean ...")."""
    try:
        _, recipe = studio.catalog.parse_recipe(body.recipe, body.name)
    except StudioError as exc:
        raise _refuse(exc) from None
    return {"ok": True, "resolved": recipe.model_dump(mode="json")}


@router.post("/api/recipes/set")
def set_keys(body: SetBody) -> dict[str, str]:
    """The recipe with ``key=value`` overrides applied, as `seektune run RECIPE key=value` applies them; the
    form's fields send their changes through here, so the YAML view and the command line never disagree."""
    import yaml

    from seektune.recipe import RecipeError, apply_overrides

    try:
        raw = yaml.safe_load(body.recipe) if body.recipe.strip() else {}
    except yaml.YAMLError as exc:
        raise HTTPException(400, f"recipe: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise HTTPException(400, "recipe: a recipe must be a mapping of sections")
    try:
        raw = apply_overrides(raw, [f"{key}={value}" for key, value in body.set.items() if value != ""])
    except RecipeError as exc:
        raise HTTPException(400, str(exc)) from None
    for key in [k for k, v in body.set.items() if v == ""]:
        *parents, last = key.split(".")
        node = raw
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return {"recipe": yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)}


@router.post("/api/session")
def session(request: Request) -> JSONResponse:
    """With a key: reached only with it; sets it as a SameSite=Strict cookie, so the run's own pages load in
    frames. Without a key: nothing to do."""
    response = JSONResponse({"ok": True})
    token = request.app.state.token
    if token:
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


@router.post("/api/uploads")
def upload(body: UploadBody, studio: StudioDep) -> dict[str, Any]:
    """Keep a data file under the runs directory's uploads; returns its path for data.paths."""
    name = Path(body.filename).name
    if not name or name.startswith(".") or Path(name).suffix.lower() not in UPLOAD_SUFFIXES:
        raise HTTPException(400, f"file {body.filename!r}: upload a {', '.join(sorted(UPLOAD_SUFFIXES))} file")
    # a folder per content: a file uploaded again with changes never replaces the one an earlier run read
    data = body.content.encode("utf-8")
    target = studio.catalog.uploads / hashlib.sha256(data).hexdigest()[:16] / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return {"path": str(target), "bytes": target.stat().st_size}


def _reading_settings(recipe: str | None) -> dict[str, Any]:
    """The data settings of a recipe that decide how a row is read; none when the recipe does not parse (the
    preview then reads with the defaults, and the recipe's own error is shown beside it)."""
    import yaml

    from seektune.recipe import DataSpec

    from pydantic import ValidationError

    try:
        data = (yaml.safe_load(recipe or "") or {}).get("data") or {}
        settings = {k: data[k] for k in ("format", "columns", "meta_fields", "system_prompt") if k in data}
        DataSpec(paths=[], **settings)
        return settings
    except (yaml.YAMLError, AttributeError, TypeError, ValidationError):  # the validate route reports these
        return {}


@router.post("/api/data/preview")
def preview(body: PreviewBody, studio: StudioDep) -> dict[str, Any]:
    """The first rows as seektune reads them, the format detected, and every rejected row with file:line."""
    from seektune.data.formats import FormatError, detect_format
    from seektune.data.io import DataPathError, RawRow, read_rows
    from seektune.data.prepare import load_records
    from seektune.recipe import DataSpec

    try:
        path = studio.catalog.readable(body.path)
        spec = DataSpec(paths=[str(path)], **_reading_settings(body.recipe))
        records, rejects, read = load_records(spec)
        formats: dict[str, int] = {}
        for item in islice(read_rows([str(path)]), 200):
            if isinstance(item, RawRow):
                try:
                    kind = detect_format(item.data, spec.columns) if spec.format == "auto" else spec.format
                except FormatError:
                    kind = "unknown"
                formats[kind] = formats.get(kind, 0) + 1
    except StudioError as exc:
        raise _refuse(exc) from None
    except (DataPathError, OSError, ValueError) as exc:
        raise HTTPException(400, f"{body.path}: {exc}") from None
    return {"path": str(path), "read": read, "kept": len(records), "rejected": len(rejects),
            "formats": formats, "rows": records[:PREVIEW_ROWS],
            "rejects": [{"origin": r.origin, "reason": r.reason, "detail": r.detail} for r in
                        rejects[:PREVIEW_REJECTS]]}


# ------------------------------------------------------------------ runs

@router.get("/api/runs")
def runs(studio: StudioDep) -> dict[str, Any]:
    """Every run under the runs directory, newest activity first."""
    listed = [studio.catalog.summary(name, studio.jobs_of(name)) for name in studio.catalog.names()]
    listed.sort(key=lambda r: (r["age_s"] is None, r["age_s"] or 0))
    return {"runs": listed, "runs_dir": str(studio.catalog.runs_dir)}


@router.get("/api/runs/{name}")
def run_detail(name: str, studio: StudioDep) -> dict[str, Any]:
    try:
        return studio.catalog.detail(name, studio.jobs_of(name))
    except StudioError as exc:
        raise _refuse(exc) from None


def _run_page(studio: Studio, name: str, which: str) -> FileResponse:
    try:
        run = studio.catalog.run_dir(name)
    except StudioError as exc:
        raise _refuse(exc) from None
    path = run.report_html if which == "report" else run.card_html
    if not path.is_file():
        raise HTTPException(404, f"run {name!r} has no {which} yet")
    return FileResponse(path, media_type="text/html; charset=utf-8",
                        headers={"content-security-policy": PAGE_CSP, "x-frame-options": "SAMEORIGIN"})


@router.get("/api/runs/{name}/report")
def report_page(name: str, studio: StudioDep) -> FileResponse:
    """The run's report.html (what `seektune eval` wrote)."""
    return _run_page(studio, name, "report")


@router.get("/api/runs/{name}/card")
def card_page(name: str, studio: StudioDep) -> FileResponse:
    """The run's data card (what `seektune prepare` wrote)."""
    return _run_page(studio, name, "card")


@router.post("/api/runs/{name}/chat")
def chat(name: str, body: ChatBody, studio: StudioDep) -> dict[str, str]:
    """One answer from the run's tuned model (as `seektune chat RUN`), greedy."""
    try:
        return {"answer": studio.reply(name, body.messages, body.max_new_tokens)}
    except StudioError as exc:
        raise _refuse(exc) from None


@router.get("/api/compare")
def compare(studio: StudioDep, runs: Annotated[list[str], Query(max_length=20)]) -> dict[str, Any]:
    """`seektune compare` over evaluated runs: the table (best per metric) and the chart as a PNG data URI."""
    from seektune.evaluate.figures import compare_chart_png
    from seektune.evaluate.report import compare_runs, compare_table_rows

    try:
        dirs = [studio.catalog.run_dir(n) for n in runs]
    except StudioError as exc:
        raise _refuse(exc) from None
    missing = [d.path.name for d in dirs if not d.metrics.is_file()]
    if missing:
        raise HTTPException(400, f"not evaluated yet: {', '.join(missing)}")
    result = compare_runs([d.path for d in dirs])
    header, rows = compare_table_rows(result)
    for run, row in zip(result["runs"], rows):
        row[0] = Path(run["run"]).name
    return {"header": header, "rows": rows, "best": {m: Path(r).name for m, r in result["best"].items()},
            "chart": compare_chart_png(result)}


# ------------------------------------------------------------------ jobs

@router.post("/api/jobs")
def submit(body: JobBody, studio: StudioDep) -> dict[str, Any]:
    """Queue a seektune command for a run; the command is in the answer, as a user would type it."""
    catalog = studio.catalog
    try:
        if body.stage in ("run", "prepare", "train", "tune"):
            if body.recipe is None:
                raise StudioError(f"stage {body.stage} needs the recipe")
            raw, _ = catalog.parse_recipe(body.recipe, body.name)
            argv = [body.stage, str(catalog.save_recipe(body.name, raw))]
        else:
            run = catalog.run_dir(body.name)
            if body.stage == "eval":
                argv = ["eval", str(run.path)]
            elif body.stage == "export":
                if body.to not in EXPORT_TARGETS:
                    raise StudioError(f"export needs to: one of {', '.join(EXPORT_TARGETS)}")
                argv = ["export", str(run.path), "--to", body.to]
            elif body.stage == "update":
                if not run.feedback_db.is_file():
                    raise StudioError(f"run {body.name!r} has no feedback to learn from yet (`seektune serve` "
                                      "records it)", 409)
                argv = ["update", str(run.path), "--feedback", str(run.feedback_db)]
            else:
                if body.to not in FEEDBACK_TARGETS:
                    raise StudioError(f"feedback export needs to: one of {', '.join(FEEDBACK_TARGETS)}")
                if not run.feedback_db.is_file():
                    raise StudioError(f"run {body.name!r} has no feedback yet (`seektune serve` records it)", 409)
                argv = ["feedback", "export", "--db", str(run.feedback_db), "--to", body.to]
        busy = [j for j in studio.jobs_of(body.name) if j.status in ("queued", "running")]
        if busy:
            raise StudioError(f"run {body.name!r} already has job {busy[0].id} {busy[0].status}", 409)
        job = studio.runner.submit(body.name, body.stage, argv)
    except (StudioError, JobError) as exc:
        raise _refuse(exc) from None
    return job.public()


@router.get("/api/jobs")
def jobs(studio: StudioDep) -> dict[str, Any]:
    return {"jobs": [j.public() for j in studio.store.jobs()]}


def _job_or_404(studio: Studio, job_id: int):
    try:
        return studio.store.get(job_id)
    except JobNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("/api/jobs/{job_id}")
def job(job_id: int, studio: StudioDep) -> dict[str, Any]:
    return _job_or_404(studio, job_id).public()


@router.post("/api/jobs/{job_id}/cancel")
def cancel(job_id: int, studio: StudioDep) -> dict[str, Any]:
    """A queued job is cancelled at once; a running one is stopped (SIGTERM, then SIGKILL after 10 s)."""
    _job_or_404(studio, job_id)
    try:
        return studio.runner.cancel(job_id).public()
    except JobError as exc:
        raise HTTPException(409, str(exc)) from None


def _log_lines(data: bytes) -> list[str]:
    """Terminal output as lines: a progress bar redrawn with carriage returns shows its latest state."""
    lines = []
    for line in data.decode("utf-8", "replace").split("\n"):
        latest = [part for part in line.split("\r") if part.strip()]
        if latest:
            lines.append(latest[-1])
    return lines


def _event(kind: str, payload: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False, allow_nan=False)}\n\n"


@router.get("/api/jobs/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def events(job_id: int, request: Request, studio: StudioDep) -> StreamingResponse:
    """Server-sent events until the job ends: ``log`` (new lines), ``progress`` (step, max_steps and new loss
    points from the run's progress file), ``status`` (the job). The last event is the final ``status``."""
    _job_or_404(studio, job_id)
    log_path = studio.runner.log_path(job_id)

    async def stream() -> AsyncIterator[str]:
        log_offset = progress_offset = 0
        if log_path.is_file() and log_path.stat().st_size > LOG_TAIL:  # a long log: its last part
            with log_path.open("rb") as handle:
                log_offset = handle.seek(log_path.stat().st_size - LOG_TAIL)
                tail = handle.read(LOG_TAIL)
            breaks = [i for i in (tail.find(b"\n"), tail.find(b"\r")) if i >= 0]
            log_offset += min(breaks) + 1 if breaks else 0  # from the first whole line (or bar redraw)
        status = None
        while True:
            full_chunk = False
            current = studio.store.get(job_id)
            progress_file = studio.catalog.run_dir(current.run, must_exist=False).progress
            if log_path.is_file():
                with log_path.open("rb") as handle:
                    handle.seek(log_offset)
                    data = handle.read(LOG_CHUNK)
                full_chunk = len(data) == LOG_CHUNK
                # a running job's last line may be half written; a progress bar redraws with \r and no \n for long
                cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1 if current.status not in TERMINAL else len(data)
                cut = cut or (len(data) if full_chunk else 0)
                if cut:
                    log_offset += cut
                    if lines := _log_lines(data[:cut]):
                        yield _event("log", {"lines": lines})
            if current.started is not None:  # before the job starts, the file is an earlier training's
                progress = read_progress(progress_file, progress_offset)
                if progress["offset"] != progress_offset:
                    progress_offset = progress["offset"]
                    yield _event("progress", progress)
            if current.public() != status:
                status = current.public()
                yield _event("status", status)
            behind = log_path.is_file() and log_offset < log_path.stat().st_size
            if current.status in TERMINAL and not behind:
                return
            if await request.is_disconnected():
                return
            if not full_chunk:  # a full chunk means more log is there already: send it at once
                await asyncio.sleep(EVENT_POLL_S)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


# ------------------------------------------------------------------ building and serving

def build_studio_app(runs_dir: Path, *, data_roots: list[Path] | None = None, token: str | None = None,
                     allowed_hosts: list[str] | None = None, max_jobs: int = 1, start_jobs: bool = True,
                     job_env: dict[str, str] | None = None) -> FastAPI:
    """The studio over ``runs_dir`` (created if missing). ``start_jobs=False`` leaves the job runner stopped
    (tests tick it by hand); ``job_env`` is added to each job's environment."""
    catalog = Catalog(Path(runs_dir), data_roots=data_roots)
    runner = JobRunner(JobStore(catalog.jobs_db), catalog.job_logs, max_running=max_jobs, env=job_env)
    app = FastAPI(title="seektune studio", version="1", docs_url=None, redoc_url=None,
                  description="Recipes, runs, jobs, reports, compare and chat over one runs directory. Every job "
                              "is a `seektune` command; see the page at / .")
    app.state.studio = Studio(catalog, runner)
    app.state.token_required, app.state.token = bool(token), token or None
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(router)
    app.add_middleware(ReviewGuard, token=token or None, max_body_bytes=MAX_BODY_BYTES, what="studio", cookie=COOKIE,
                       open_paths={"/"} | {f"/static/{name}" for name in STATIC_FILES},
                       allowed_hosts=allowed_hosts if allowed_hosts is not None else default_allowed_hosts("127.0.0.1"))
    if start_jobs:
        runner.start()
    return app


def serve_studio(runs_dir: Path, data_roots: list[Path], host: str = "127.0.0.1", port: int = 8020,
                 token: str | None = None, max_jobs: int = 1, open_browser: bool = False) -> None:
    """`seektune studio`: serve the app until interrupted (running jobs go on; the next studio adopts them)."""
    import uvicorn

    app = build_studio_app(runs_dir, data_roots=data_roots, token=token, allowed_hosts=default_allowed_hosts(host),
                           max_jobs=max_jobs)
    url = page_url(host, port)
    log.warning("studio over %s: %s%s", app.state.studio.catalog.runs_dir, url, "   (key required)" if token else "")
    if open_browser:
        threading.Timer(1.0, webbrowser.open, [url + (f"#token={token}" if token else "")]).start()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        app.state.studio.runner.stop()
