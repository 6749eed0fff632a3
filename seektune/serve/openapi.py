"""The OpenAPI document at ``/openapi.json``: what this server does, not what FastAPI guesses.

    install_openapi(app)            # what build_app does; app.openapi() then builds the document once

FastAPI's own document knows the request bodies only. This one adds what the guard and the
routes really answer, for one started server:

- every status a route can give, each with OpenAI's error body: 400 (a bad body, a bad
  ``Host``), 401 (when an API key is set; the routes then carry a bearer ``security``), 404
  (an unknown model id or completion id), 408 / 413 (a body too slow / too large), 429 with
  ``Retry-After``; never FastAPI's 422, which this server does not send;
- the 200 bodies (chat completion, text completion, model list, ...), and
  ``text/event-stream`` next to JSON for the routes that stream when ``stream`` is true;
  ``/metrics`` as Prometheus text;
- the server's caps: ``model`` as an enum of the ids loaded at start-up, ``n`` up to
  ``max_n``, ``max_tokens`` up to ``max_tokens_cap``, and the prompt limit in words (tokens
  cannot be counted by a schema); ``rag`` as false-only on a server started without ``--rag``.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from seektune.serve import schemas
from seektune.serve.guard import LIMITED_PATHS, OPEN_PATHS

REF = "#/components/schemas/{model}"
# (path, method) -> the 200 body's model, and whether the route streams Server-Sent Events on request
ANSWERS: dict[tuple[str, str], tuple[type, bool]] = {
    ("/v1/chat/completions", "post"): (schemas.ChatCompletion, True),
    ("/v1/completions", "post"): (schemas.TextCompletion, True),
    ("/v1/models", "get"): (schemas.ModelList, False),
    ("/v1/feedback", "post"): (schemas.FeedbackAck, False),
    ("/health", "get"): (schemas.Health, False),
}
UNKNOWN_MODEL = "The model id is not served here (GET /v1/models lists them)."
NOT_FOUND = {"/v1/chat/completions": UNKNOWN_MODEL, "/v1/completions": UNKNOWN_MODEL,
             "/v1/feedback": "No completion with this id, or it has no such choice."}
SSE_NOTE = ("With `stream: true`: Server-Sent Events, one `data: {chunk}` line per delta (OpenAI's chunk "
            "objects), then `data: [DONE]`. An error after the stream started arrives as a `data: {\"error\": ...}` "
            "event.")

# Open API 3.1 reads a text/event-stream schema as one event's ({data, event, id, retry})
SSE_EVENT = {"type": "object", "required": ["data"], "properties": {
    "data": {"type": "string", "description": "A chunk object as JSON, an error object, or `[DONE]`."},
    "event": {"type": "string"}}}


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` return :func:`openapi_document` for the app's state (built once, then cached)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app)
        return app.openapi_schema

    app.openapi = openapi


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {
        "application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}}}
    if headers:
        response["headers"] = headers
    return response


def _integer_branch(prop: dict[str, Any]) -> dict[str, Any]:
    """The integer schema inside ``prop`` (pydantic writes ``int | None`` as ``anyOf``)."""
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") == "integer":
            return branch
    raise KeyError("no integer branch")


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document for ``app``, corrected to what this server answers (see the module docstring)."""
    state = app.state.serve
    settings, models = state.settings, list(state.catalog.routes)
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = doc.setdefault("components", {})
    found = components.setdefault("schemas", {})
    _, extra = models_json_schema([(model, "serialization") for model, _ in ANSWERS.values()]
                                  + [(schemas.ErrorResponse, "serialization")], ref_template=REF)
    found.update(extra.get("$defs", {}))
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body: never sent here
        found.pop(name, None)
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        props = found[name]["properties"]
        props["model"] = {**props["model"], "type": "string", "enum": models}
        props["model"].pop("maxLength", None)
        _integer_branch(props["n"])["maximum"] = settings.max_n
        for key in ("max_tokens", "max_completion_tokens"):
            if key in props:
                _integer_branch(props[key])["maximum"] = settings.max_tokens_cap
        if "rag" in props and state.retriever is None:  # no index: only false (or nothing) is accepted
            props["rag"] = {**props["rag"], "anyOf": [{"type": "boolean", "enum": [False]}, {"type": "null"}],
                            "description": "This server was started without --rag INDEX: only false is accepted."}
        prompt_key = "messages" if "messages" in props else "prompt"
        props[prompt_key]["description"] = (
            props[prompt_key].get("description", "") + f" The rendered prompt may hold at most "
            f"{settings.max_prompt_tokens} tokens and must leave room in the model's context; else 400 "
            "`context_length_exceeded`.").strip()
    if settings.api_key:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}

    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            operation["responses"] = _responses(path, method, operation.get("responses", {}), settings)
            if settings.api_key and path not in OPEN_PATHS:
                operation["security"] = [{"bearer": []}]
    return doc


def _responses(path: str, method: str, given: dict[str, Any], settings) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    answer = ANSWERS.get((path, method))
    if answer is not None:
        model, streams = answer
        content: dict[str, Any] = {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}
        description = "OK"
        if streams:
            content["text/event-stream"] = {"schema": SSE_EVENT}
            description = "OK. " + SSE_NOTE
        responses["200"] = {"description": description, "content": content}
    elif path == "/metrics":
        responses["200"] = {"description": "Prometheus metrics in the text exposition format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}}}
    else:
        responses["200"] = copy.deepcopy(given.get("200", {"description": "OK"}))
    bad = "The `Host` header is not one this server answers (see --allowed-host)."
    if method == "post":
        bad = "The body is not valid JSON or does not fit the schema (`param` names the field), a cap is " \
              "exceeded, or " + bad[0].lower() + bad[1:]
    responses["400"] = _error(bad)
    if settings.api_key and path not in OPEN_PATHS:
        responses["401"] = _error("Missing or wrong API key (send `Authorization: Bearer <key>`).",
                                  {"WWW-Authenticate": {"schema": {"type": "string"}}})
    if path in NOT_FOUND:
        responses["404"] = _error(NOT_FOUND[path])
    if method == "post":
        responses["408"] = _error(f"The body did not arrive within {settings.body_timeout_s:g} s.")
        responses["413"] = _error(f"The body is larger than {settings.max_body_bytes} bytes.")
    if path in LIMITED_PATHS:
        responses["429"] = _error(f"{settings.max_concurrency} completion requests are already in flight.",
                                  {"Retry-After": {"schema": {"type": "string"},
                                                   "description": "Seconds to wait before retrying."}})
    return responses
