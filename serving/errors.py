"""One error shape for every failure: ``{"error": {"code", "message", "details"}}``.

Domain errors map to 4xx (``NotFoundError`` → 404, ``InvalidInputError`` → 422,
``VersionConflictError`` → 409); nothing the caller sends may produce a 5xx.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection

from knowledge.errors import (
    DomainError,
    InvalidInputError,
    NotFoundError,
    VersionConflictError,
)

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class ApiError(Exception):
    status_code = 400

    def __init__(
        self,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or _CODES.get(self.status_code, "error")
        self.headers = headers
        self.details = details


class Unauthorized(ApiError):
    status_code = 401


class Forbidden(ApiError):
    status_code = 403


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class PayloadTooLarge(ApiError):
    status_code = 413


class Unprocessable(ApiError):
    status_code = 422


class TooManyRequests(ApiError):
    status_code = 429


class ServiceUnavailable(ApiError):
    status_code = 503


def error_body(status: int, message: str, code: str | None = None, details: Any = None) -> dict:
    error: dict[str, Any] = {"code": code or _CODES.get(status, "error"), "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(status, message, code, details), status, headers=headers)


def status_for(error: Exception) -> int:
    """HTTP status of a domain or API error (used by the WebSocket denial too)."""
    if isinstance(error, ApiError):
        return error.status_code
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, VersionConflictError):
        return 409
    if isinstance(error, InvalidInputError):
        return 422
    return 400


def _validation_details(error: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for item in error.errors():
        details.append(
            {
                "loc": [str(p) for p in item.get("loc", ())],
                "message": str(item.get("msg", "")),
                "type": str(item.get("type", "")),
            }
        )
    return details


async def _api_error(_: HTTPConnection, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.message, exc.code, exc.details, exc.headers)


async def _domain_error(_: HTTPConnection, exc: Exception) -> JSONResponse:
    status = status_for(exc)
    code = {404: "not_found", 409: "version_conflict", 422: "invalid_input"}.get(status)
    return error_response(status, str(exc), code)


async def _validation_error(_: HTTPConnection, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, "the request is not valid", details=_validation_details(exc))


async def _http_error(_: HTTPConnection, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(
        exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None) or None
    )


async def _integrity_error(_: HTTPConnection, exc: Exception) -> JSONResponse:
    # A uniqueness or reference race the service's own checks did not catch.
    log.info("integrity error: %s", exc)
    return error_response(409, "the change conflicts with existing data", "conflict")


async def _database_error(request: HTTPConnection, exc: Exception) -> JSONResponse:
    # Values PostgreSQL refuses (out-of-range numbers, NUL bytes, …) are the caller's input.
    if isinstance(exc, DBAPIError) and _is_data_error(exc):
        return error_response(422, "a value is out of range or not valid", "invalid_input")
    return await _unexpected(request, exc)


def _is_data_error(exc: DBAPIError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    return sqlstate.startswith("22")  # class 22: data exception


async def _unexpected(request: HTTPConnection, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s", request.url.path, exc_info=exc)
    return error_response(500, "an unexpected error occurred", "internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unexpected)


#: ``responses=`` for routers: the error shape documented in OpenAPI.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": desc}
    for status, desc in (
        (400, "Malformed request (e.g. a body that cannot be parsed)"),
        (401, "Not authenticated"),
        (403, "Forbidden (including a failed CSRF check)"),
        (404, "Not found"),
        (413, "Request body too large"),
        (
            422,
            "Invalid input, including text PostgreSQL cannot store anywhere in the request "
            "(a NUL character, invalid UTF-8 or a lone surrogate in the path, the query, the "
            "body or a field name)",
        ),
    )
}


#: ``responses=`` of rate-limited operations (429 with ``Retry-After``).
RATE_LIMITED_RESPONSE: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorResponse,
        "description": "Too many requests: wait the seconds named by `Retry-After`",
        "headers": {
            "Retry-After": {
                "description": "seconds until the window resets",
                "schema": {"type": "integer"},
            }
        },
    }
}


#: ``responses=`` of routes without authentication: what any request may get.
MALFORMED_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: ERROR_RESPONSES[status] for status in (400, 413, 422)
}
