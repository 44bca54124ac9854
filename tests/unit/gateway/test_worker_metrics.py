"""A gateway worker of several (``trunkline gateway --workers N``) answers ``/metrics`` for them
all: the other workers' counts added to its own, their gauges combined by the gateway's rules."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.gateway.test_gateway import CHAT, _ready
from tests.unit.gateway.test_gateway import auth as auth_headers

from trunkline.gateway.worker_metrics import GAUGE_RULES
from trunkline.kit.metrics_merge import families_of
from trunkline.kit.metrics_share import MetricsShare

CHAT_200 = ("trunkline_requests_total", (("route", "/v1/chat/completions"), ("status", "200")))


def _scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _other_worker(directory: Path) -> None:
    """Another worker (a running process: this one's parent) that served 5 chats, holds 3
    usage events and has not loaded the configuration yet."""
    registry = CollectorRegistry()
    requests = Counter("trunkline_requests", "", ["route", "status"], registry=registry)
    requests.labels("/v1/chat/completions", "200").inc(5)
    Gauge("trunkline_usage_events_held", "", registry=registry).set(3)
    Gauge("trunkline_snapshot_version", "", registry=registry).set(0)
    MetricsShare(directory, pid=os.getppid()).write(0, families_of(registry.collect()))


def test_a_workers_scrape_adds_the_other_workers(make_gateway, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _other_worker(tmp_path)
    gw, key = _ready(make_gateway, workers_metrics_dir=tmp_path)
    for _ in range(2):
        response = gw.client.post("/v1/chat/completions", json=CHAT, headers=auth_headers(key))
        assert response.status_code == 200
    scraped = _scrape(gw.client.get("/metrics").text)
    assert scraped[CHAT_200] == 7
    assert scraped[("trunkline_snapshot_version", ())] == 0  # the oldest any worker serves
    assert gw.client.app.state.gateway.holder.current.version > 0  # this one's


def test_every_gauge_of_the_gateway_has_a_rule(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gw, key = _ready(make_gateway)  # SLO admission and quotas on, as by default
    assert gw.client.post("/v1/chat/completions", json=CHAT, headers=auth_headers(key))
    registry: CollectorRegistry = gw.client.app.state.metrics
    gauges = {family.name for family in registry.collect() if family.type == "gauge"}
    assert {"trunkline_endpoint_in_service", "trunkline_admission_held_requests"} <= gauges
    assert gauges <= GAUGE_RULES.keys(), gauges - GAUGE_RULES.keys()
