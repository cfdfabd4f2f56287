"""The one place errors become HTTP responses: ``{"error": ..., "detail": ...}``, never a trace.

* ``RecommenderError`` subclasses carry their own status (``errors.py``): 404 not found,
  422 invalid, 503 backend down or no model ...;
* request validation failures are 422 with pydantic's list of problems as ``detail``;
* Starlette's own HTTP errors (unknown path, wrong method, 401) keep their status;
* anything else is a bug: 500 with a generic message, and the trace goes to the log only.

Every error is counted in the ``recommender_api_errors`` metric by route and type.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from recommender.errors import RecommenderError
from recommender.serve.metrics import route_label

log = logging.getLogger(__name__)
ERROR_NAMES = {401: "unauthorized", 404: "not found", 422: "invalid request",
               503: "service unavailable"}


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(RecommenderError, _domain)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)


def error_response(request: Request, status: int, error: str, detail: object,
                   kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(route_label(request.scope), kind).inc()
    return JSONResponse({"error": error, "detail": jsonable_encoder(detail)},
                        status_code=status, headers=headers)


async def _domain(request: Request, exc: RecommenderError) -> JSONResponse:
    status = int(exc.http_status)
    if status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    return error_response(request, status, _phrase(status), str(exc), type(exc).__name__)


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                for e in exc.errors()]
    return error_response(request, 422, "invalid request", problems, "RequestValidationError")


async def _http(request: Request, exc: HTTPException) -> JSONResponse:
    return error_response(request, exc.status_code, _phrase(exc.status_code), exc.detail,
                          f"HTTP{exc.status_code}", headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response(request, 500, "internal error",
                          "the server failed unexpectedly; the cause is in its log",
                          type(exc).__name__)


def _phrase(status: int) -> str:
    if status in ERROR_NAMES:
        return ERROR_NAMES[status]
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"
