"""Every control-plane error as an RFC 9457 problem detail (``application/problem+json``):
Trunkline's own error codes are mapped to HTTP here, once, and so are Litestar's validation
errors, malformed bodies, unknown routes and methods, the database's refusals and unique-
constraint races (``HANDLERS``, the app's exception handlers)."""

from __future__ import annotations

import logging
import re
from enum import Enum
from http import HTTPStatus
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from trunkline.apps.request_context import loggable
from trunkline.auth.secrets import redacted
from trunkline.errors import RequestTimeout, TrunklineError, Unauthenticated
from trunkline.kit.db import driver_message
from trunkline.kit.text import shown

log = logging.getLogger("trunkline.controlplane")

PROBLEM_JSON = "application/problem+json"
_STATUS_BY_CODE = {
    "invalid_request": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "request_timeout": 408,
    "client_closed": 499,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "rate_limited": 429,
    "quota_exhausted": 429,
    "unavailable": 503,
    "upstream_error": 502,
    "upstream_unavailable": 503,
    "slo_unattainable": 503,
}
_CODE_BY_STATUS = {status: code for code, status in reversed(_STATUS_BY_CODE.items())}
_FIELD_IN_MESSAGE = re.compile(r"field `([^`]+)`")
_MISSING_PARAMETER = re.compile(r"^Missing required (\w+) parameter '([^']+)'")
"""Litestar's message for a missing query, header, cookie or path parameter (no ``extra``)."""

_TITLES = {"invalid_request": "Invalid request", "client_closed": "Client Closed Request"}
"""A problem type's title where it is not its status's phrase. RFC 9457: the title is the
type's, the same on every occurrence; what went wrong this time is the ``detail``."""


def problem(
    request: Request[Any, Any, Any],
    status: int,
    code: str,
    detail: str,
    *,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[dict[str, Any]]:
    # A whole key or token pasted where an id or a name goes is repeated with its secret cut.
    body: dict[str, Any] = {
        "type": f"urn:trunkline:problem:{code}",
        "title": _TITLES.get(code) or HTTPStatus(status).phrase,
        "status": status,
        "detail": redacted(detail),
        "instance": redacted(request.url.path),
        "code": code,
    }
    if errors:
        body["errors"] = [{k: redacted(v) for k, v in error.items()} for error in errors]
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _trunkline_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, TrunklineError)
    status = _STATUS_BY_CODE.get(exc.code, 500)
    if status >= 500:
        log.error("request failed: %s", exc.message, exc_info=exc)
    errors = None
    if exc.param is not None:
        errors = [
            {"field": exc.param, "message": exc.message, "source": source_of(request, exc.param)}
        ]
    headers = None
    if isinstance(exc, Unauthenticated):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, RequestTimeout):  # RFC 9110: the rest of its body is not read
        headers = {"Connection": "close"}
    return problem(request, status, exc.code, exc.message, errors=errors, headers=headers)


def source_of(request: Request[Any, Any, Any], field: str) -> str:
    """Where the caller gave the ``field`` a service refused: a path or query parameter of that
    name, else the body (a service names the value it was given, not where it came from;
    ``period`` is a path parameter of one route and a query parameter of another)."""
    if field in (request.scope.get("path_params") or {}):
        return "path"
    if field in request.query_params:
        return "query"
    return "body"


def _body_error(message: str) -> list[dict[str, str]]:
    """A body that does not decode: the field at fault is the whole of it."""
    return [{"field": "body", "message": message, "source": "body"}]


def _validation_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, ValidationException)
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        message = shown(str(item.get("message", "invalid value")))
        key = str(item.get("key") or "")
        if key in ("", "data") and (named := _FIELD_IN_MESSAGE.search(message)):
            key = named.group(1)
        source = item.get("source", "body")
        # Litestar names a parameter's source with its ParamType enum: its value is the word.
        source = str(source.value if isinstance(source, Enum) else source)
        errors.append({"field": key or "body", "message": message, "source": source})
    if not errors and (missing := _MISSING_PARAMETER.match(str(exc.detail))):
        source, field = missing.groups()
        errors.append({"field": field, "message": "required", "source": source})
    fields = ", ".join(e["field"] for e in errors) or "the request"
    return problem(
        request, 400, "invalid_request", f"invalid value for {fields}", errors=errors,
    )  # fmt: skip


def _database_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The database refused or dropped the connection: ours to fix, the caller's to retry.
    One line in the log (the driver's message names the host, never a password)."""
    assert isinstance(exc, OperationalError)
    log.error("database unavailable: %s", driver_message(exc))
    return problem(
        request, 503, "unavailable", "the database is unavailable; retry shortly",
        headers={"Retry-After": "2"},
    )  # fmt: skip


def _pool_exhausted(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Every connection of the API's pool stayed in use for the pool's timeout (a burst of slow
    requests): the control plane's load, not a fault, so no traceback; the caller retries."""
    log.warning("no database connection came free within the pool's timeout: %s", exc)
    return problem(
        request, 503, "unavailable",
        "the control plane has all its database connections in use; retry shortly",
        headers={"Retry-After": "2"},
    )  # fmt: skip


def _database_refused_value(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A value the database cannot store (too long, out of range, a NUL) that no schema caught
    first: the caller's input, so a 400, never a 500. One line in the log: the statement's
    parameters stay out of it."""
    assert isinstance(exc, DataError)
    reason = driver_message(exc)
    log.warning("the database refused a value: %s", loggable(reason))
    return problem(
        request, 400, "invalid_request", "a value in the request is out of range for the database",
    )  # fmt: skip


def _too_deep(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """JSON nested deeper than the decoder recurses: the only input that reaches this depth."""
    log.warning("refused a request body nested too deeply to decode")
    message = "it nests too deeply"
    return problem(
        request, 400, "invalid_request", f"the body is not valid JSON: {message}",
        errors=_body_error(message),
    )  # fmt: skip


def _http_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code = _CODE_BY_STATUS.get(status, "internal_error" if status >= 500 else "invalid_request")
    detail, errors = exc.detail, None
    if status == 400 and _is_decode_error(exc):
        detail, errors = f"the body is not valid JSON: {detail}", _body_error(detail)
    if status >= 500:
        log.error("request failed: %s", detail, exc_info=exc)
        detail = HTTPStatus(status).phrase
    return problem(request, status, code, detail, errors=errors, headers=exc.headers)


def _is_decode_error(exc: HTTPException) -> bool:
    # Litestar wraps a body that does not decode in a plain ClientException
    return isinstance(exc.__cause__, SerializationException)


def _integrity_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The constraint's own message only: the exception's text also holds the statement's
    parameters (e-mail addresses, names, hashes of secrets), which have no place in a log."""
    assert isinstance(exc, IntegrityError)
    message = driver_message(exc)
    log.info("integrity error answered as conflict: %s", loggable(message))
    return problem(request, 409, "conflict", "the change conflicts with existing data")


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("unhandled error", exc_info=exc)
    return problem(request, 500, "internal_error", "internal server error")


HANDLERS: ExceptionHandlersMap = {
    TrunklineError: _trunkline_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    IntegrityError: _integrity_error,
    OperationalError: _database_unavailable,
    PoolTimeout: _pool_exhausted,
    DataError: _database_refused_value,
    RecursionError: _too_deep,
    Exception: _internal_error,
}
"""The app's exception handlers, most specific first (Litestar picks by the exception's MRO)."""
