"""Composition root of the control plane: the REST API over tenancy, keys and the catalog.

Every error leaves as an RFC 9457 problem detail (``application/problem+json``):
Trunkline's own error codes are mapped to HTTP here, once, and so are
Litestar's validation errors, malformed bodies, unknown routes and methods, and
unique-constraint races. Each request runs in one transaction; when it changed
what gateways must know, the snapshot is published after the commit.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import AsyncGenerator
from enum import Enum
from http import HTTPStatus
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import redis.asyncio as aioredis
from litestar import Litestar, Request, Response, get
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

import trunkline
from trunkline.apps.controlplane_metrics import (
    instrumented,
    metrics_route,
    shared_metrics,
    sharing,
)
from trunkline.apps.publishing import SnapshotSync, keeping_published
from trunkline.apps.runtime import Runtime
from trunkline.auth.controllers import AuthController, DevLoginController
from trunkline.auth.guards import provide_principal
from trunkline.auth.middleware import EXCLUDE_FROM_AUTH, AccessTokenMiddleware
from trunkline.billing.controllers import PlatformExportController, TenantExportController
from trunkline.errors import InvalidRequest, RequestTimeout, TrunklineError, Unauthenticated
from trunkline.keys.controllers import ApiKeyController
from trunkline.kit.db import driver_message
from trunkline.kit.ids import new_request_id
from trunkline.kit.logging import bind, reset
from trunkline.kit.page_links import provide_paging
from trunkline.kit.text import shown
from trunkline.metering.controllers import UsageController
from trunkline.pools.controllers import (
    AvailableModelController,
    CatalogModelController,
    EntitlementController,
    FlavorController,
    PoolController,
)
from trunkline.quota.controllers import (
    KeyQuotaController,
    TenantQuotaController,
    TierQuotaController,
    usage_reader_provider,
)
from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.quota.redis_store import RedisQuotaStore
from trunkline.quota.store import QuotaStore
from trunkline.settings import Settings
from trunkline.tenancy.changes import change_of, config_changed, hold_config
from trunkline.tenancy.controllers import (
    MemberController,
    ProjectController,
    TenantController,
    TierController,
)

log = logging.getLogger("trunkline.controlplane")

MAX_BODY_BYTES = 1024 * 1024
SNAPSHOT_CHECK_S = 2.0
"""How often the control plane checks that the snapshot store still holds a snapshot."""
BEARER = SecurityScheme(type="http", scheme="bearer", description="tlu_… access token")
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
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def dev_login_enabled(settings: Settings) -> bool:
    """The development login (a token for any e-mail, platform admins' included) outside
    production, and only on a control plane bound to loopback: one started on a network address
    without ``TRUNKLINE_ENVIRONMENT=production`` would otherwise hand anyone admin rights."""
    return (
        settings.security.dev_login
        and not settings.is_production
        and _loopback(settings.controlplane.host)
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


CONTROLLERS = (
    AuthController,
    TierController,
    TenantController,
    MemberController,
    ProjectController,
    ApiKeyController,
    EntitlementController,
    AvailableModelController,
    FlavorController,
    CatalogModelController,
    PoolController,
    UsageController,
    TenantExportController,
    PlatformExportController,
    TierQuotaController,
    TenantQuotaController,
    KeyQuotaController,
)


def create_controlplane_app(
    runtime: Runtime,
    *,
    quota_store: QuotaStore | None = None,
    snapshot_check_s: float = SNAPSHOT_CHECK_S,
    workers_metrics_dir: Path | None = None,
) -> Litestar:
    """The control-plane API over ``runtime``; the development login only where allowed.

    ``quota_store`` is where gateways count quota usage (read back by the quota endpoints);
    by default Redis when ``TRUNKLINE_REDIS__URL`` is set, else this process's memory. Every
    ``snapshot_check_s`` it checks that the snapshot store holds the database's configuration,
    and publishes it if not (:func:`trunkline.apps.publishing.republish_if_stale`).
    ``workers_metrics_dir``: where the workers of ``--workers N`` share their metrics, so
    ``/metrics`` shows them all; None: this process's.
    """
    quota = quota_store or default_quota_store(runtime.settings)
    sync = SnapshotSync()
    registry = CollectorRegistry()
    shared = shared_metrics(registry, workers_metrics_dir)
    handlers: list[Any] = [
        healthz(runtime, sync), livez, metrics_route(registry, shared), *CONTROLLERS,
    ]  # fmt: skip
    if dev_login_enabled(runtime.settings):
        handlers.append(DevLoginController)
    elif runtime.settings.security.dev_login and not runtime.settings.is_production:
        log.warning(
            "development login off: the control plane binds %s, not loopback",
            runtime.settings.controlplane.host,
        )
    app = Litestar(
        route_handlers=handlers,
        dependencies={
            "db_session": Provide(session_provider(runtime)),
            "principal": Provide(provide_principal, sync_to_thread=False),
            "server_secret": Provide(secret_provider(runtime), sync_to_thread=False),
            "session_factory": Provide(lambda: runtime.session_factory, sync_to_thread=False),
            "quota_usage": Provide(usage_reader_provider(quota), sync_to_thread=False),
            "paging": Provide(provide_paging, sync_to_thread=False),
        },
        on_shutdown=[quota.close],
        lifespan=[keeping_published(runtime, snapshot_check_s, sync), sharing(shared)],
        middleware=[
            DefineMiddleware(
                AccessTokenMiddleware,
                session_factory=runtime.session_factory,
                server_secret=runtime.server_secret,
                exclude=["^/schema"],
            ),
        ],
        exception_handlers={
            TrunklineError: _trunkline_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
            IntegrityError: _integrity_error,
            OperationalError: _database_unavailable,
            DataError: _database_refused_value,
            RecursionError: _too_deep,
            Exception: _internal_error,
        },
        openapi_config=OpenAPIConfig(
            title="Trunkline control plane",
            version=trunkline.__version__,
            path="/schema",
            render_plugins=[JsonRenderPlugin()],
            components=Components(security_schemes={"accessToken": BEARER}),
            security=[{"accessToken": []}],
        ),
        before_request=refuse_nul_parameters,
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,
    )
    # Around the router, not among the routes' middleware: unknown routes (404) and methods
    # (405) are answered before any route's middleware runs, and carry a request id too (and
    # are counted).
    app.asgi_handler = instrumented(
        app, RequestContextMiddleware(app.asgi_handler), runtime, sync, registry
    )
    return app


def refuse_nul_parameters(request: Request[Any, Any, Any]) -> None:
    """A path or query parameter holding NUL (``%00``) is refused as a 400 naming it: PostgreSQL
    refuses NUL in text, so looking it up would fail in the database, as a 500. No name,
    id or alias of Trunkline can hold one (the schemas refuse control characters)."""
    given = [*request.path_params.items(), *request.query_params.multi_items()]
    for name, value in given:
        if isinstance(value, str) and "\x00" in value:
            raise InvalidRequest(f"{name} must not contain a NUL character", param=name)


def default_quota_store(settings: Settings) -> QuotaStore:
    if settings.redis.url:
        client = aioredis.Redis.from_url(settings.redis.url)
        return RedisQuotaStore(client, settings.redis.key_prefix)
    return InMemoryQuotaStore()


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that change nothing: their requests take no lock."""


def session_provider(runtime: Runtime) -> Any:
    """One session and one transaction per request; publish after a commit that changed config.
    A request that may change something holds the configuration's lock first, as every
    transaction that may change it does (``tenancy.changes.changing``)."""

    async def provide_db_session(request: Request[Any, Any, Any]) -> AsyncGenerator[Session, None]:
        session = runtime.session_factory()
        try:
            if request.method not in SAFE_METHODS:  # may change the configuration: its lock first
                await anyio.to_thread.run_sync(hold_config, session)
            yield session
            await anyio.to_thread.run_sync(session.commit)
        except BaseException:
            await anyio.to_thread.run_sync(session.rollback)
            raise
        finally:
            await anyio.to_thread.run_sync(session.close)
        if config_changed(session):
            await anyio.to_thread.run_sync(runtime.publish, change_of(session))

    return provide_db_session


def secret_provider(runtime: Runtime) -> Any:
    def provide_server_secret() -> bytes:
        return runtime.server_secret

    return provide_server_secret


def healthz(runtime: Runtime, sync: SnapshotSync) -> Any:
    @get("/healthz", opt={EXCLUDE_FROM_AUTH: True}, sync_to_thread=True, tags=["health"])
    def health() -> dict[str, object]:
        """Readiness: the database answers (503 when not); ``snapshot`` says whether the
        gateways' configuration is kept the database's (``in_sync``; when not, for how long
        and why). No authentication."""
        with runtime.session_factory() as session:
            session.execute(text("SELECT 1"))
        return {"status": "ok", "snapshot": sync.report()}

    return health


@get("/livez", opt={EXCLUDE_FROM_AUTH: True}, sync_to_thread=False, tags=["health"])
def livez() -> dict[str, str]:
    """Liveness: the process answers, whatever its database does (a liveness probe on
    ``/healthz`` would restart every replica at each database outage). No authentication."""
    return {"status": "ok"}


_PROBES = frozenset({"/healthz", "/livez"})
"""Paths an orchestrator polls: logged at DEBUG, not on every probe at INFO."""


class RequestContextMiddleware:
    """Bind a request id to every log line of the request and echo it as ``x-request-id``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", ""))
        presented = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = presented if _REQUEST_ID.match(presented) else new_request_id()
        token = bind(request_id=request_id)
        started, status = time.perf_counter(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed_ms = round(1000 * (time.perf_counter() - started), 2)
            extra = {"status": status, "duration_ms": elapsed_ms}
            path = scope["path"]
            level = logging.DEBUG if path in _PROBES else logging.INFO  # every few seconds
            log.log(level, "%s %s %s", method, loggable(path), status, extra=extra)
            reset(token)


def loggable(text: str) -> str:
    """``text`` (a decoded path: ``%0A`` is a line break by now) with its control characters
    escaped, so a caller cannot start a forged log line or send escape sequences to a terminal."""
    return _CONTROL_CHARACTER.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


# --- problem details --------------------------------------------------------------------------


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
    body: dict[str, Any] = {
        "type": f"urn:trunkline:problem:{code}",
        "title": _TITLES.get(code) or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "code": code,
    }
    if errors:
        body["errors"] = errors
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _trunkline_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, TrunklineError)
    status = _STATUS_BY_CODE.get(exc.code, 500)
    if status >= 500:
        log.error("request failed: %s", exc.message, exc_info=exc)
    errors = None
    if exc.param is not None:
        errors = [{"field": exc.param, "message": exc.message}]
    headers = None
    if isinstance(exc, Unauthenticated):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, RequestTimeout):  # RFC 9110: the rest of its body is not read
        headers = {"Connection": "close"}
    return problem(request, status, exc.code, exc.message, errors=errors, headers=headers)


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
    return problem(
        request, 400, "invalid_request", "the body is not valid JSON: it nests too deeply",
    )  # fmt: skip


def _http_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code = _CODE_BY_STATUS.get(status, "internal_error" if status >= 500 else "invalid_request")
    detail = exc.detail
    if status == 400 and _is_decode_error(exc):
        detail = f"the body is not valid JSON: {detail}"
    if status >= 500:
        log.error("request failed: %s", detail, exc_info=exc)
        detail = HTTPStatus(status).phrase
    return problem(request, status, code, detail, headers=exc.headers)


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
