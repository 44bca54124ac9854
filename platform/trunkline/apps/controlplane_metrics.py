"""The control plane's ``/metrics``: its API requests by route template, method and status
(``trunkline.kit.request_metrics``), requests refused for a late body, connections closed for a
late head, and its snapshot publishing (``apps.publish_metrics``; whether its periodic check
keeps the gateways' configuration the database's, as ``/healthz`` says).

Its own registry, per app: in embedded mode (``trunkline up``) the gateway beside it keeps its
own, so neither shows the other's metrics, and the names they share
(``trunkline_header_timeouts_total``, ``trunkline_body_timeouts_total``) count each server's
own. No label names a tenant, key, user or id. Served to the holder of the scrape token
(``TRUNKLINE_CONTROLPLANE__METRICS_TOKEN``, ``kit.scrape_access``), as the gateway's, not to a
user's token: a scraper holds no user's token (a platform admin's would grant everything).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.types import ASGIApp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trunkline.apps.publishing import SnapshotSync
from trunkline.apps.runtime import Runtime
from trunkline.apps.serving import CONTROL_PLANE
from trunkline.auth.middleware import EXCLUDE_FROM_AUTH
from trunkline.errors import RequestTimeout
from trunkline.kit.body_timeout import BodyTimeout
from trunkline.kit.header_timeout import HeaderTimeoutCollector
from trunkline.kit.metrics_merge import GaugeRule
from trunkline.kit.metrics_share import EXPOSITION_TYPE, MetricsShare, SharedMetrics
from trunkline.kit.request_metrics import RequestMetrics, route_templates
from trunkline.kit.scrape_access import ScrapeAccess

__all__ = ["GAUGE_RULES", "UNCOUNTED", "instrumented", "metrics_route", "shared_metrics", "sharing"]

UNCOUNTED = frozenset({"/metrics", "/livez", "/healthz"})
"""Scrapes and probes, every few seconds: not API traffic."""


class SnapshotSyncCollector(Collector):
    """``/healthz``'s ``snapshot`` as gauges (absent until the first check has run)."""

    def __init__(self, sync: SnapshotSync) -> None:
        self._sync = sync

    def collect(self) -> Iterator[Metric]:
        if not self._sync.checked:
            return
        failing_since = self._sync.failing_since
        yield GaugeMetricFamily(
            "trunkline_snapshot_in_sync",
            "1 while the periodic check keeps the gateways' configuration the database's; 0 "
            "while it fails (the snapshot store refusing writes or away, or the database): a key "
            "created meanwhile is refused by every gateway, a revoked one still accepted",
            value=1.0 if failing_since is None else 0.0,
        )
        yield GaugeMetricFamily(
            "trunkline_snapshot_sync_failing_seconds",
            "Seconds the periodic check has been failing (0 while it succeeds)",
            value=0.0 if failing_since is None else max(time.time() - failing_since, 0.0),
        )


def instrumented(
    app: Litestar,
    handler: ASGIApp,
    runtime: Runtime,
    sync: SnapshotSync,
    registry: CollectorRegistry,
) -> ASGIApp:
    """``app``'s whole handler (``handler``: its ``asgi_handler``, perhaps wrapped) with its
    requests counted by ``app``'s routes and its request bodies bounded by
    ``controlplane.body_timeout_s``; the rest of the metrics registered in ``registry``."""
    registry.register(runtime.metrics)
    registry.register(SnapshotSyncCollector(sync))
    registry.register(HeaderTimeoutCollector(CONTROL_PLANE))  # counted by the server it runs in
    requests = RequestMetrics(
        registry,
        route_of=route_templates(app),
        uncounted=UNCOUNTED,
        prefix="trunkline_controlplane",
        by_method=True,
        first_byte=False,
    )
    late = BodyTimeout(runtime.settings.controlplane.body_timeout_s, _late_body, registry)
    return requests.wrap(late.wrap(handler))


def _late_body(timeout_s: float) -> RequestTimeout:
    return RequestTimeout(f"the request body did not arrive whole within {timeout_s:g} s")


GAUGE_RULES: dict[str, GaugeRule] = {
    "trunkline_snapshot_published_version": "max",
    "trunkline_snapshot_published_age_seconds": "youngest_age",
    "trunkline_snapshot_in_sync": "min",
    "trunkline_snapshot_sync_failing_seconds": "ongoing_age",
}
"""How the gauges add up over the workers of ``trunkline controlplane --workers N``: the
newest version any worker stored, and when; out of sync while any worker's check fails, for
as long as the longest. A worker that stopped reporting (its event loop blocked) has its ages
advanced by the time since its report, not frozen at it."""


def shared_metrics(registry: CollectorRegistry, directory: Path | None) -> SharedMetrics | None:
    """``registry`` shared with the other workers through ``directory`` (None: one worker)."""
    return (
        None if directory is None else SharedMetrics(registry, MetricsShare(directory), GAUGE_RULES)
    )


def sharing(
    shared: SharedMetrics | None,
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def share(_app: Litestar) -> AsyncIterator[None]:
        if shared is not None:
            await shared.start()
        try:
            yield
        finally:
            if shared is not None:
                await shared.close()

    return share


def metrics_route(
    registry: CollectorRegistry, shared: SharedMetrics | None, access: ScrapeAccess
) -> Any:
    @get("/metrics", opt={EXCLUDE_FROM_AUTH: True}, include_in_schema=False)
    async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
        """Prometheus text format; every worker's with ``--workers N``. The scrape token, not
        a user's (see the module's docstring)."""
        access.check(request.headers.getall("authorization", []))
        page = generate_latest(registry) if shared is None else await shared.exposition()
        return Response(page, media_type=EXPOSITION_TYPE)

    return metrics
