"""The worker's metrics: what it ingested, what is left in the stream, and when the stream
and the ledger last answered, so a stalled worker shows as one."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from trunkline.metering.consumer import UsageConsumer
from trunkline.metering.consumer_metrics import ConsumerCollector
from trunkline.metering.stream import InMemoryUsageStream
from unit.metering.usage_support import Account, at, event


def test_the_metrics_follow_what_the_worker_ingested_and_what_is_left(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    stream = InMemoryUsageStream(claim_idle_s=3600)
    consumer = UsageConsumer(stream, factory, batch_size=2)
    registry = CollectorRegistry()
    registry.register(ConsumerCollector(consumer, stream))
    value = registry.get_sample_value
    for n in range(3):
        stream.emit(event(tenants["acme"], f"r{n}", when=at(3)))
    assert value("trunkline_usage_stream_backlog") == 3
    before = time.time()
    assert consumer.step() == 2
    assert value("trunkline_usage_ingested_events_total") == 2
    assert value("trunkline_usage_stream_backlog") == 1
    for what in ("read", "commit"):  # both happened during that step
        age = value(f"trunkline_usage_ingest_last_{what}_age_seconds")
        assert age is not None and 0 <= age <= time.time() - before


class _Unreachable(InMemoryUsageStream):
    def backlog(self) -> int:
        raise ConnectionError("Redis is away")


def test_a_backlog_it_cannot_read_is_left_out_not_a_failed_scrape(
    factory: sessionmaker[Session],
) -> None:
    stream = _Unreachable()
    registry = CollectorRegistry()
    registry.register(ConsumerCollector(UsageConsumer(stream, factory), stream))
    assert registry.get_sample_value("trunkline_usage_stream_backlog") is None
    assert registry.get_sample_value("trunkline_usage_ingested_events_total") == 0


def test_a_worker_that_never_reached_the_stream_or_the_ledger_shows_ages_since_its_start(
    factory: sessionmaker[Session],
) -> None:
    """An alert on the ages (a stalled worker) fires for a worker started while Redis or the
    database was away as for one that lost them later: the ages are never left out."""
    stream = _Unreachable()
    registry = CollectorRegistry()
    started = time.time() - 120
    registry.register(ConsumerCollector(UsageConsumer(stream, factory), stream, started_at=started))
    for what in ("read", "commit"):
        age = registry.get_sample_value(f"trunkline_usage_ingest_last_{what}_age_seconds")
        assert age is not None and 120 <= age <= time.time() - started
