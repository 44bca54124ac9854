"""The gateway's view of its engines as Prometheus metrics: read from :class:`EngineState` and
the KV-event subscriber at each scrape of the gateway's ``/metrics``, so the request path pays
nothing for them."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trunkline.gateway.endpoints.block_sizes import BlockSizeCheck
from trunkline.gateway.endpoints.kv_subscriber import (
    CLEAR_REASONS,
    REPLAY_OUTCOMES,
    KvEventSubscriber,
)
from trunkline.gateway.endpoints.state import EndpointHealth, EngineState

__all__ = ["EndpointCollector", "KvEventCollector"]


class EndpointCollector(Collector):
    """Per endpoint (label ``endpoint``): in service or ejected, ejections, failures of
    requests and of scrapes, requests in flight from this process, how old its last scraped
    metrics are, the load routing reads from them (running, waiting, KV-cache usage) and its
    engine's KV block size; with ``block_sizes``, whether that is each of its pools'."""

    def __init__(self, engines: EngineState, block_sizes: BlockSizeCheck | None = None) -> None:
        self._engines = engines
        self._block_sizes_check = block_sizes

    def collect(self) -> Iterator[Metric]:
        labels = ["endpoint"]
        in_service = GaugeMetricFamily(
            "trunkline_endpoint_in_service",
            "1 while the endpoint takes requests, 0 while it is ejected",
            labels=labels,
        )
        ejections = CounterMetricFamily(
            "trunkline_endpoint_ejections",
            "Times the endpoint was ejected after consecutive failures",
            labels=labels,
        )
        failures = CounterMetricFamily(
            "trunkline_endpoint_failures",
            "Failures seen on the endpoint: of requests (connect errors, 5xx, timeouts, streams "
            "that broke) or of metrics scrapes",
            labels=[*labels, "kind"],
        )
        in_flight = GaugeMetricFamily(
            "trunkline_endpoint_requests_in_flight",
            "Requests this gateway process has sent to the endpoint and not seen end",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "trunkline_endpoint_metrics_age_seconds",
            "Seconds since the endpoint's /metrics last answered a scrape (+Inf: never)",
            labels=labels,
        )
        running = GaugeMetricFamily(
            "trunkline_endpoint_running",
            "Requests the engine runs, as its last scraped page says",
            labels=labels,
        )
        waiting = GaugeMetricFamily(
            "trunkline_endpoint_waiting",
            "Requests waiting in the engine as routing counts them: its last page's, plus "
            "those this process sent since that scrape",
            labels=labels,
        )
        kv_usage = GaugeMetricFamily(
            "trunkline_endpoint_kv_cache_usage",
            "Share of the engine's KV cache in use (0 to 1), as its last scraped page says",
            labels=labels,
        )
        loads = self._engines.loads()
        report = self._engines.health_report()
        for health in report:
            endpoint = [health.endpoint]
            in_service.add_metric(endpoint, float(health.in_service))
            ejections.add_metric(endpoint, health.ejections)
            failures.add_metric([*endpoint, "request"], health.request_failures)
            failures.add_metric([*endpoint, "scrape"], health.scrape_failures)
            in_flight.add_metric(endpoint, health.in_flight)
            age_s = health.scrape_age_s
            age.add_metric(endpoint, math.inf if age_s is None else age_s)
            load = loads.get(health.endpoint)
            if age_s is not None and load is not None:
                running.add_metric(endpoint, load.running)
                waiting.add_metric(endpoint, load.waiting)
                kv_usage.add_metric(endpoint, load.kv_usage)
        yield from (in_service, ejections, failures, in_flight, age, running, waiting, kv_usage)
        yield from self._block_sizes(report)

    def _block_sizes(self, report: list[EndpointHealth]) -> Iterator[Metric]:
        engine = GaugeMetricFamily(
            "trunkline_endpoint_block_size",
            "The engine's KV block size in tokens, as its /metrics page says",
            labels=["endpoint"],
        )
        for health in report:
            if health.block_size is not None:
                engine.add_metric([health.endpoint], health.block_size)
        yield engine
        if self._block_sizes_check is not None:
            mismatch = GaugeMetricFamily(
                "trunkline_endpoint_block_size_mismatch",
                "1 while the engine's KV block size is not its pool's block_size (prefix routing "
                "then matches none of its cache: set the pool's block_size), else 0",
                labels=["endpoint", "pool"],
            )
            for sizes in self._block_sizes_check.compare():
                mismatch.add_metric([sizes.endpoint, sizes.pool], float(not sizes.agree))
            yield mismatch


class KvEventCollector(Collector):
    """Per endpoint publishing KV-cache events: whether this gateway's subscription is live, the
    events applied, the times its blocks were cleared (the precise prefix index then knows
    nothing of it until new events arrive) and the replays asked for. ``subscriber`` returns
    the running subscriber (None: none, e.g. before the app started or without precise
    routing)."""

    def __init__(self, subscriber: Callable[[], KvEventSubscriber | None]) -> None:
        self._subscriber = subscriber

    def collect(self) -> Iterator[Metric]:
        connected = GaugeMetricFamily(
            "trunkline_kv_events_connected",
            "1 while the subscription to the endpoint's KV-event publisher is live, else 0",
            labels=["endpoint"],
        )
        applied = CounterMetricFamily(
            "trunkline_kv_events_applied",
            "KV-cache events of the endpoint applied to the precise prefix index",
            labels=["endpoint"],
        )
        clears = CounterMetricFamily(
            "trunkline_kv_event_clears",
            "Times the endpoint's blocks were cleared from the precise prefix index: gap (lost "
            "messages no replay recovered), disconnect, restart (its numbering went back) or "
            "error (the subscription failed and is started again)",
            labels=["endpoint", "reason"],
        )
        replays = CounterMetricFamily(
            "trunkline_kv_event_replays",
            "Replays of missed KV-event messages asked of the endpoint: complete (the end "
            "came; the engine may no longer have kept them all) or failed (no answer in time, "
            "or a socket error)",
            labels=["endpoint", "outcome"],
        )
        subscriber = self._subscriber()
        if subscriber is not None:
            for endpoint, state in subscriber.summary().items():
                connected.add_metric([endpoint], float(state["connected"]))
                applied.add_metric([endpoint], float(state["events"]))
                for reason in CLEAR_REASONS:
                    clears.add_metric([endpoint, reason], subscriber.clears[(endpoint, reason)])
                for outcome in REPLAY_OUTCOMES:
                    count = subscriber.replays[(endpoint, outcome)]
                    replays.add_metric([endpoint, outcome], count)
        yield from (connected, applied, clears, replays)
