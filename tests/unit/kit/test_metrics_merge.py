"""How the metrics of a server's workers add up into one scrape."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from trunkline.gateway.worker_metrics import GAUGE_RULES, PER_ENDPOINT
from trunkline.kit.metrics_merge import (
    FamilyReport,
    GaugeRule,
    WorkerReport,
    families_of,
    merge,
    merge_exact,
)

NOW = 1_000.0


def _worker(pid: int, *families: FamilyReport, live: bool = True, at: float = NOW) -> WorkerReport:
    return WorkerReport(pid, at, live, families)


def _gauge(name: str, value: float, **labels: str) -> FamilyReport:
    return FamilyReport(name, "gauge", "a gauge", ((name, labels, value),))


def _counter(value: float, created: float, **labels: str) -> FamilyReport:
    samples = (("requests_total", labels, value), ("requests_created", labels, created))
    return FamilyReport("requests", "counter", "requests", samples)


def _values(reports: list[WorkerReport], rules: dict[str, GaugeRule]) -> dict[str, float]:
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for metric in merge(reports, rules, now=NOW)
        for sample in metric.samples
    }


def test_counters_add_up_over_every_worker_a_stopped_one_too() -> None:
    reports = [
        _worker(1, _counter(5, created=20.0, route="/a")),
        _worker(2, _counter(7, created=10.0, route="/a"), _counter(1, 30.0, route="/b")),
        _worker(3, _counter(11, created=5.0, route="/a"), live=False),  # restarted: kept
    ]
    assert _values(reports, {}) == {
        "requests_total[('route', '/a')]": 23.0,
        "requests_created[('route', '/a')]": 5.0,  # the earliest
        "requests_total[('route', '/b')]": 1.0,
        "requests_created[('route', '/b')]": 30.0,
    }


def test_histograms_add_up_bucket_by_bucket() -> None:
    registries = [CollectorRegistry(), CollectorRegistry()]
    for registry, observed in zip(registries, ([0.1, 3.0], [0.2, 0.3, 9.0]), strict=True):
        histogram = Histogram("wait", "wait", buckets=(0.5, 5.0), registry=registry)
        for value in observed:
            histogram.observe(value)
    reports = [_worker(pid, *families_of(r.collect())) for pid, r in enumerate(registries)]
    got = _values(reports, {})
    assert got["wait_bucket[('le', '0.5')]"] == 3.0
    assert got["wait_bucket[('le', '5.0')]"] == 4.0
    assert got["wait_bucket[('le', '+Inf')]"] == 5.0
    assert got["wait_count[]"] == 5.0
    assert got["wait_sum[]"] == pytest.approx(12.6)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("sum", 5.0),  # what each worker holds: 2 + 3, the stopped one's 100 no longer
        ("min", 2.0),  # e.g. in service only while no worker has it ejected
        ("max", 3.0),
        ("age", 3.0 + 4.0),  # the second wrote its report 4 s ago: it is that much older now
    ],
)
def test_gauges_combine_the_live_workers_by_their_rule(rule: GaugeRule, expected: float) -> None:
    reports = [
        _worker(1, _gauge("g", 2.0)),
        _worker(2, _gauge("g", 3.0), at=NOW - 4.0),
        _worker(3, _gauge("g", 100.0), live=False),
    ]
    assert _values(reports, {"g": rule}) == {"g[]": expected}


def test_a_gauge_without_a_rule_is_summed_and_never_is_an_age_in_the_future() -> None:
    reports = [_worker(1, _gauge("held", 2.0)), _worker(2, _gauge("held", 3.0))]
    assert _values(reports, {}) == {"held[]": 5.0}
    late = [_worker(1, _gauge("age", math.inf, endpoint="a"), _gauge("age2", 1.0), at=NOW + 9)]
    assert _values(late, {"age": "age", "age2": "age"}) == {
        "age[('endpoint', 'a')]": math.inf,  # never scraped stays so
        "age2[]": 1.0,  # a clock a little ahead adds nothing
    }


def test_a_report_round_trips_through_its_file_format() -> None:
    registry = CollectorRegistry()
    Counter("requests", "requests", ["route"], registry=registry).labels("/a").inc(3)
    Gauge("age", "age", registry=registry).set(math.inf)
    report = _worker(42, *families_of(registry.collect()), at=12.5)
    assert WorkerReport.from_json(report.to_json()) == report
    assert WorkerReport.from_json(report.to_json()).stopped() == _worker(
        42, *report.families, at=12.5, live=False
    )


@pytest.mark.parametrize("values", [[0.0, 0.0], [1e16, 1.0, -1e16], [math.inf, 1.0], [0.1] * 10])
def test_stopped_workers_merged_exactly_add_up_as_every_value_would(values: list[float]) -> None:
    # What a fold keeps: a counter at zero keeps its sample, one that is not finite its value.
    folded = _worker(
        0, *merge_exact([_worker(i, _counter(v, created=1.0)) for i, v in enumerate(values)])
    )
    assert _values([folded], {})["requests_total[]"] == math.fsum(values)
    assert _values([folded, _worker(9, _counter(0.5, created=2.0))], {}) == {
        "requests_total[]": math.fsum([*values, 0.5]),
        "requests_created[]": 1.0,
    }


def _failures(value: float, endpoint: str) -> FamilyReport:
    labels = {"endpoint": endpoint, "kind": "request"}
    samples = (("trunkline_endpoint_failures_total", labels, value),)
    return FamilyReport("trunkline_endpoint_failures", "counter", "failures", samples)


def test_a_stopped_workers_counts_of_an_endpoint_leave_the_scrape_with_the_endpoint() -> None:
    """A worker's counts stay in the totals once it stopped, but only while the endpoint they
    count is served: after it left the configuration they would stay forever (one series per
    endpoint ever removed), having gone back from every worker's total to the stopped one's,
    which Prometheus reads as a reset (``increase()`` jumps by what the stopped worker had)."""
    stopped = _worker(3, _failures(50, "e1"), _failures(4, "e2"), live=False)
    served = [_worker(1, _failures(100, "e1"), _failures(1, "e2")), stopped]
    removed = [_worker(1, _failures(1, "e2")), stopped]  # e1 left the configuration

    def failures(reports: list[WorkerReport]) -> dict[str, float]:
        return {
            sample.labels["endpoint"]: sample.value
            for metric in merge(reports, GAUGE_RULES, now=NOW, scoped=PER_ENDPOINT)
            for sample in metric.samples
        }

    assert failures(served) == {"e1": 150, "e2": 5}
    assert failures(removed) == {"e2": 5}
