"""Composition root of the control plane: the REST API over tenancy, keys and the catalog.

Every error leaves as an RFC 9457 problem detail (``apps.problems``). Each request runs in one
transaction; when it changed what gateways must know, the snapshot is published after the
commit. A handler with work to do after its commit (the quota PUTs read usage from Redis, which
a write must not wait on holding the configuration's lock) takes ``config_writes`` instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import redis.asyncio as aioredis
from litestar import Litestar, Request, get
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session

import trunkline
from trunkline.apps.controlplane_metrics import (
    instrumented,
    metrics_route,
    shared_metrics,
    sharing,
)
from trunkline.apps.problems import HANDLERS
from trunkline.apps.publishing import SnapshotSync, keeping_published
from trunkline.apps.readiness import DatabaseReadiness, healthz
from trunkline.apps.request_body import BodyCheck
from trunkline.apps.request_context import RequestContextMiddleware
from trunkline.apps.request_parameters import ParameterCheck
from trunkline.apps.runtime import REDIS_TIMEOUT_S, Runtime
from trunkline.apps.store_outage import StoreOutage
from trunkline.auth.controllers import AuthController, DevLoginController
from trunkline.auth.guards import guard_again, provide_principal
from trunkline.auth.middleware import EXCLUDE_FROM_AUTH, AccessTokenMiddleware
from trunkline.billing.controllers import PlatformExportController, TenantExportController
from trunkline.keys.controllers import ApiKeyController
from trunkline.kit.page_links import provide_paging
from trunkline.kit.scrape_access import ScrapeAccess, loopback
from trunkline.kit.shutdown_delay import ShutdownDelay, closing_while_draining
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
from trunkline.tenancy.changes import change_of, config_changed, hold_config, unit_of_work
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


def dev_login_enabled(settings: Settings) -> bool:
    """The development login (a token for any e-mail, platform admins' included) outside
    production, and only on a control plane bound to loopback: one started on a network address
    without ``TRUNKLINE_ENVIRONMENT=production`` would otherwise hand anyone admin rights."""
    return (
        settings.security.dev_login
        and not settings.is_production
        and loopback(settings.controlplane.host)
    )


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
    shutdown_delay: ShutdownDelay | None = None,
) -> Litestar:
    """The control-plane API over ``runtime``; the development login only where allowed.

    ``quota_store`` is where gateways count quota usage (read back by the quota endpoints);
    by default Redis when ``TRUNKLINE_REDIS__URL`` is set, else this process's memory. Every
    ``snapshot_check_s`` it checks that the snapshot store holds the database's configuration,
    and publishes it if not (:func:`trunkline.apps.publishing.republish_if_stale`).
    ``workers_metrics_dir``: where the workers of ``--workers N`` share their metrics, so
    ``/metrics`` shows them all; None: this process's.
    ``shutdown_delay``: on SIGTERM, ``/healthz`` fails while the server serves on for its
    delay (``trunkline controlplane``); None: SIGTERM is the server's alone.
    """
    quota = quota_store or default_quota_store(runtime.settings)
    sync = SnapshotSync()
    registry = CollectorRegistry()
    shared = shared_metrics(registry, workers_metrics_dir)
    cp = runtime.settings.controlplane
    access = ScrapeAccess(cp.metrics_token, cp.host, "TRUNKLINE_CONTROLPLANE__METRICS_TOKEN")
    readiness = DatabaseReadiness(runtime.settings.database.url, timeout_s=cp.readiness_timeout_s)
    handlers: list[Any] = [
        healthz(readiness, sync, access, shutdown_delay), livez,
        metrics_route(registry, shared, access),
        *CONTROLLERS,
    ]  # fmt: skip
    if dev_login_enabled(runtime.settings):
        handlers.append(DevLoginController)
    elif runtime.settings.security.dev_login and not runtime.settings.is_production:
        log.warning(
            "development login off: the control plane binds %s, not loopback",
            runtime.settings.controlplane.host,
        )
    parameters, bodies = ParameterCheck(), BodyCheck()

    async def before_request(request: Request[Any, Any, Any]) -> None:
        parameters(request)
        await bodies(request)

    app = Litestar(
        route_handlers=handlers,
        dependencies={
            "db_session": Provide(session_provider(runtime)),
            "principal": Provide(provide_principal, sync_to_thread=False),
            "server_secret": Provide(secret_provider(runtime), sync_to_thread=False),
            "session_factory": Provide(lambda: runtime.session_factory, sync_to_thread=False),
            "config_writes": Provide(config_writes(runtime), sync_to_thread=False),
            "quota_usage": Provide(quota_usage(quota, runtime), sync_to_thread=False),
            "paging": Provide(provide_paging, sync_to_thread=False),
            "max_live_keys": Provide(
                lambda: runtime.settings.controlplane.max_live_keys_per_tenant,
                sync_to_thread=False,
            ),
        },
        on_shutdown=[
            quota.close,
            lambda: readiness.close(),
        ],  # Litestar passes itself to one of arguments
        lifespan=[
            keeping_published(runtime, snapshot_check_s, sync),
            sharing(shared),
            *([shutdown_delay.installed] if shutdown_delay is not None else []),
        ],
        middleware=[
            DefineMiddleware(
                AccessTokenMiddleware,
                session_factory=runtime.session_factory,
                server_secret=runtime.server_secret,
                previous_secrets=runtime.previous_secrets,
                exclude=["^/schema"],
            ),
        ],
        exception_handlers=dict(HANDLERS),
        openapi_config=OpenAPIConfig(
            title="Trunkline control plane",
            version=trunkline.__version__,
            path="/schema",
            render_plugins=[JsonRenderPlugin()],
            components=Components(security_schemes={"accessToken": BEARER}),
            security=[{"accessToken": []}],
        ),
        before_request=before_request,
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,
    )
    # Around the router, not among the routes' middleware: unknown routes (404) and methods
    # (405) are answered before any route's middleware runs, and carry a request id too (and
    # are counted).
    app.asgi_handler = instrumented(
        app, RequestContextMiddleware(app.asgi_handler), runtime, sync, registry
    )
    if shutdown_delay is not None:
        app.asgi_handler = closing_while_draining(app.asgi_handler, shutdown_delay)
    return app


def default_quota_store(settings: Settings) -> QuotaStore:
    if settings.redis.url:
        # The control plane's timeouts, not redis-py's 5 s: a Redis that does not answer held
        # a worker thread that long for each quota GET.
        client = aioredis.Redis.from_url(
            settings.redis.url,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        return RedisQuotaStore(client, settings.redis.key_prefix)
    return InMemoryQuotaStore()


def quota_usage(store: QuotaStore, runtime: Runtime) -> Any:
    """The quota endpoints' usage reads from ``store``: bounded by the control plane's Redis
    timeout, and skipped (``usage: null``) while Redis is suspected of not answering.

    The control plane has one Redis (``TRUNKLINE_REDIS__URL``) for the snapshot and the quota
    counters, so one notion of whether it answers: the runtime's (``Runtime.outage``). A quota
    PUT on a frozen Redis waited for its publish's timeout, then for its usage read's (4 s in
    all), and a usage read after the outage was known waited 2 s again. With a snapshot store in
    this process's memory (tests, the embedded demo), the quota store given has its own."""
    meanwhile = "the quota endpoints show no usage (usage: null)"
    if runtime.settings.redis.url:
        outage = runtime.outage
        outage.also(meanwhile)
    else:
        outage = StoreOutage(name="the quota store", meanwhile=meanwhile)
    return usage_reader_provider(store, timeout_s=REDIS_TIMEOUT_S, outage=outage)


def config_writes(runtime: Runtime) -> Any:
    """Transactions of a handler's own that may change the configuration, each published after
    its commit, as a request's (``session_provider``)."""

    def provide_config_writes(
        request: Request[Any, Any, Any],
    ) -> Callable[[], AbstractContextManager[Session]]:
        @contextmanager
        def writes() -> Iterator[Session]:
            with unit_of_work(runtime.session_factory, runtime.publish) as session:
                # as a request's own transaction does (``session_provider``); handlers run
                # in a worker thread
                guard_again(session, request)
                yield session

        return writes

    return provide_config_writes


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
                # the caller's role as it is now that no other change can commit meanwhile
                await anyio.to_thread.run_sync(guard_again, session, request)
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


@get("/livez", opt={EXCLUDE_FROM_AUTH: True}, sync_to_thread=False, tags=["health"])
def livez() -> dict[str, str]:
    """Liveness: the process answers, whatever its database does (a liveness probe on
    ``/healthz`` would restart every replica at each database outage). No authentication."""
    return {"status": "ok"}
