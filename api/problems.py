"""The single mapping from errors to RFC 9457 problem details (application/problem+json)."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from infra.errors import ExamdayError
from infra.redis import REDIS_DOWN, hot_state_down

PROBLEM_TYPE_BASE = "https://examday.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
_STATUS_REASONS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

log = logging.getLogger("examday.api")

# Overload or an outage of the hot store (`infra.redis.REDIS_DOWN`, re-exported here for
# the routes): the client should come back shortly.
__all__ = ["REDIS_DOWN", "hot_state_down"]


def problem_response(
    status: int,
    reason: str,
    title: str,
    detail: str,
    instance: str,
    *,
    retry_after: float | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = problem_body(status, reason, title, detail, instance, extra)
    all_headers = dict(headers or {})
    if retry_after is not None:
        all_headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return JSONResponse(
        body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=all_headers
    )


def problem_body(
    status: int,
    reason: str,
    title: str,
    detail: str,
    instance: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + reason,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "reason": reason,
    }
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    return body


def error_body(error: ExamdayError, instance: str) -> dict[str, Any]:
    """The problem details of `error`, for answers that are not HTTP responses."""
    error_fields = (error.status, error.reason, error.title, error.detail, instance)
    body = problem_body(*error_fields, error.extra)
    if error.retry_after is not None:
        body.setdefault("retry_after", max(1, math.ceil(error.retry_after)))
    return body


def error_response(error: ExamdayError, instance: str) -> JSONResponse:
    return problem_response(
        error.status,
        error.reason,
        error.title,
        error.detail,
        instance,
        retry_after=error.retry_after,
        extra=error.extra,
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(ExamdayError)
    async def _examday_error(request: Request, exc: ExamdayError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("%s on %s %s: %s", exc.reason, request.method, _route(request), exc.detail)
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return problem_response(
                400, "malformed_json", "Malformed JSON", "the body is not valid JSON",
                request.url.path,
            )  # fmt: skip
        fields = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": e.get("msg", ""),
                "type": e.get("type", ""),
            }
            for e in errors
        ]
        return problem_response(
            422, "invalid_input", "Invalid input", "the request does not match the schema",
            request.url.path, extra={"errors": fields},
        )  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = _STATUS_REASONS.get(exc.status_code, f"http_{exc.status_code}")
        return problem_response(
            exc.status_code, reason, reason.replace("_", " ").capitalize(), str(exc.detail),
            request.url.path, headers=dict(exc.headers or {}),
        )  # fmt: skip

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    @app.exception_handler(ReadOnlyError)
    async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unavailable on %s %s: %s", request.method, _route(request), exc)
        return error_response(hot_state_down(), request.url.path)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # A client that hung up mid-body (its own timeout, a dropped link): nobody reads
        # this answer, and it is nothing to page anyone about.
        log.info("client disconnected during %s %s", request.method, _route(request))
        return problem_response(
            400, "client_disconnected", "Client disconnected", "the request body ended early",
            request.url.path,
        )  # fmt: skip

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, _route(request))
        return problem_response(
            500, "internal", "Internal error", "an unexpected error occurred", request.url.path
        )


def _route(request: Request) -> str:
    """The route template for log lines: the raw path holds exam and candidate ids."""
    return str(getattr(request.scope.get("route"), "path", "unmatched"))
