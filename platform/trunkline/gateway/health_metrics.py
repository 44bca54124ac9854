"""What the gateway's ``/health`` says, as Prometheus metrics: whether its configuration store
answers, how old the configuration it serves is, and the usage events it holds because the
usage stream does not answer. Read at each scrape of ``/metrics``; the request path pays
nothing for them."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trunkline.gateway.state import SnapshotHolder

__all__ = ["GatewayHealthCollector"]


class GatewayHealthCollector(Collector):
    def __init__(self, holder: SnapshotHolder, emitter: object) -> None:
        self._holder = holder
        self._emitter = emitter

    def collect(self) -> Iterator[Metric]:
        snapshot = self._holder.current
        yield GaugeMetricFamily(
            "trunkline_snapshot_store_reachable",
            "1 while the configuration store (Redis) answers this process's polls, 0 while it "
            "serves the last configuration it read",
            value=1.0 if self._holder.reachable else 0.0,
        )
        yield GaugeMetricFamily(
            "trunkline_snapshot_version",
            "Version of the configuration this process serves (0: none loaded yet)",
            value=float(snapshot.version),
        )
        checked_at = self._holder.checked_at
        since = self._holder.created_at if checked_at is None else checked_at
        yield GaugeMetricFamily(
            "trunkline_snapshot_checked_age_seconds",
            "Seconds since the configuration store last answered this process's poll (since "
            "the process started, before it first did): how stale its configuration may be "
            "(alert on this, not on the publication's age)",
            value=max(time.monotonic() - since, 0.0),
        )
        if snapshot.version > 0:
            yield GaugeMetricFamily(
                "trunkline_snapshot_age_seconds",
                "Seconds since the configuration this process serves was published",
                value=max(time.time() - snapshot.published_at, 0.0),
            )
        held = getattr(self._emitter, "held", None)
        if isinstance(held, int):
            yield GaugeMetricFamily(
                "trunkline_usage_events_held",
                "Usage events waiting in this process's memory for the usage stream (Redis); "
                "lost if the process stops before it answers",
                value=float(held),
            )
