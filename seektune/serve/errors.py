"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, each one counted.

    raise APIError(400, "stop takes at most 4 strings.", param="stop")   # in a route: the handler answers

`install_error_handlers` turns every failure of an app into that body: an `APIError`, a
request that fails validation (400, ``param`` names the field, e.g. ``messages`` or
``rating``), FastAPI's own 404 / 405, and any crash (500, logged with its traceback).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from seektune.serve import schemas
from seektune.serve.state import state_of

if TYPE_CHECKING:
    from seektune.serve.state import Metrics

log = logging.getLogger(__name__)


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


def error_body(err: APIError) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}


def error_response(metrics: Metrics, err: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
    metrics.errors.labels(str(err.status), err.code or err.type).inc()
    return JSONResponse(error_body(err), status_code=err.status, headers=headers)


# pydantic error types -> OpenAI-style codes; anything else is "invalid_value"
_CODES = {"missing": "missing_required_parameter", "json_invalid": "invalid_json", "json_type": "invalid_json",
          "int_type": "invalid_type", "float_type": "invalid_type", "bool_type": "invalid_type",
          "string_type": "invalid_type", "list_type": "invalid_type", "model_type": "invalid_type",
          "dict_type": "invalid_type", "model_attributes_type": "invalid_type", "literal_error": "invalid_value",
          "int_from_float": "invalid_type"}


def _field_names() -> frozenset[str]:
    """Every field name of the request bodies: what a ``param`` may name (not pydantic's union member tags)."""
    return frozenset(name for model in vars(schemas).values()
                     if isinstance(model, type) and issubclass(model, BaseModel) for name in model.model_fields)


_FIELDS = _field_names()


def validation_error(err: RequestValidationError) -> APIError:
    """A request body that does not fit its model -> 400 naming the first bad field (``messages``, ``n``...).

    A body that is not JSON at all has no field to name: ``param`` is null and ``code`` is
    ``invalid_json`` (pydantic's location there is a character offset, not a field)."""
    errors = list(err.errors()) or [{"loc": (), "msg": "invalid request", "type": "value_error"}]
    # A value in a union (``stop: str | list[str]``) fails once per member; the member whose type
    # matched says what is wrong (too many items), the others only that the type differs.
    first = next((e for e in errors if not str(e.get("type", "")).endswith("_type")), errors[0])
    kind = first.get("type", "value_error")
    if kind in ("json_invalid", "json_type"):
        detail = (first.get("ctx") or {}).get("error") or first.get("msg")
        return APIError(400, f"The request body is not valid JSON: {detail}.", code="invalid_json")
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and (isinstance(p, int) or p in _FIELDS)]
    param = ".".join(loc) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    if kind == "string_pattern_mismatch" and (first.get("ctx") or {}).get("pattern") == r"\S":
        message = f"{param} is empty; leave it out instead"  # the schemas' "some text, not only spaces"
    return APIError(400, message, code=_CODES.get(kind, "invalid_value"), param=param)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` in OpenAI's shape, counted in its state's metrics."""

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, err: APIError):
        return error_response(state_of(request).metrics, err)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, err: RequestValidationError):
        return error_response(state_of(request).metrics, validation_error(err))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, err: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return error_response(state_of(request).metrics, APIError(err.status_code, str(err.detail), code=code),
                              headers=getattr(err, "headers", None))  # 405 keeps its Allow

    @app.exception_handler(Exception)
    async def on_crash(request: Request, err: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_response(state_of(request).metrics,
                              APIError(500, "Internal server error.", "server_error", "internal_error"))
