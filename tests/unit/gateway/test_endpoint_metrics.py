"""The gateway's ``/metrics`` shows each endpoint's health as its engine state has it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trunkline.gateway.endpoints import EjectionPolicy, EndpointCollector, EngineState
from trunkline.gateway.endpoints.scan import scan_metrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_ejections_failures_flights_and_metrics_age_per_endpoint() -> None:
    clock = Clock()
    engines = EngineState(EjectionPolicy(eject_after=3, base_s=1.0), clock=clock)
    engines.sync(["pool/0", "pool/1"])
    registry = CollectorRegistry()
    registry.register(EndpointCollector(engines))

    page = (
        b"vllm:num_requests_waiting 0\nvllm:num_requests_running 2\nvllm:kv_cache_usage_perc 0.5\n"
    )
    engines.scraped("pool/1", scan_metrics(page), sent_at=clock.now)
    clock.now += 0.25
    flight = engines.sent("pool/1", 100)
    engines.scrape_failed("pool/1", "ReadTimeout")
    for _ in range(3):
        engines.failed("pool/0", "HTTP 500")
    clock.now += 0.25

    got = samples(registry)
    a, b = (("endpoint", "pool/0"),), (("endpoint", "pool/1"),)
    assert got["trunkline_endpoint_in_service", a] == 0.0
    assert got["trunkline_endpoint_in_service", b] == 1.0
    assert got["trunkline_endpoint_ejections_total", a] == 1.0
    assert got["trunkline_endpoint_failures_total", (*a, ("kind", "request"))] == 3.0
    assert got["trunkline_endpoint_failures_total", (*b, ("kind", "request"))] == 0.0
    assert got["trunkline_endpoint_failures_total", (*b, ("kind", "scrape"))] == 1.0
    assert got["trunkline_endpoint_requests_in_flight", b] == 1.0
    assert got["trunkline_endpoint_metrics_age_seconds", b] == 0.5
    assert got["trunkline_endpoint_metrics_age_seconds", a] == float("inf")  # never scraped
    # The load routing reads: the engine's page, and the request sent since in waiting.
    assert got["trunkline_endpoint_running", b] == 2.0
    assert got["trunkline_endpoint_waiting", b] == 1.0
    assert got["trunkline_endpoint_kv_cache_usage", b] == 0.5
    assert ("trunkline_endpoint_running", a) not in got  # nothing read yet

    engines.ended(flight)
    clock.now += 1.0  # the ejection is over: half-open, in service for the next probe
    got = samples(registry)
    assert got["trunkline_endpoint_requests_in_flight", b] == 0.0
    assert got["trunkline_endpoint_in_service", a] == 1.0
