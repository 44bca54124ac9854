"""What ``trunkline worker`` tells Prometheus: events ingested, the backlog left in the usage
stream, and when the stream and the ledger last answered. A stalled worker otherwise looks
alive while the events wait (and, with no worker at all, grow in Redis).

Read at each scrape; the backlog costs one ``XLEN``. A scrape that cannot reach Redis leaves
the backlog out (the ages say why).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trunkline.metering.consumer import UsageConsumer
from trunkline.metering.stream import UsageReader

__all__ = ["ConsumerCollector"]

log = logging.getLogger(__name__)


class ConsumerCollector(Collector):
    """``started_at``: when the worker started (Unix seconds; now by default), which the ages
    count from until the stream first answers and the ledger first commits: left out until
    then, they never showed a worker that could not reach either since its start."""

    def __init__(
        self, consumer: UsageConsumer, reader: UsageReader, *, started_at: float | None = None
    ) -> None:
        self._consumer = consumer
        self._reader = reader
        self._started_at = time.time() if started_at is None else started_at

    def collect(self) -> Iterator[Metric]:
        stats = self._consumer.stats
        yield CounterMetricFamily(
            "trunkline_usage_ingested_events",
            "Usage events this worker wrote to the ledger and acked (redeliveries included; "
            "not those set aside)",
            value=stats.events,
        )
        yield CounterMetricFamily(
            "trunkline_usage_ingest_retries",
            "Ledger writes and stream acks this worker had to try again",
            value=stats.write_retries,
        )
        yield CounterMetricFamily(
            "trunkline_usage_dead_lettered_events",
            "Stream entries this worker set aside in the dead-letter stream, not billed: not "
            "usage events the ledger can store, or stamped by a wrong clock (alert on any)",
            value=self._reader.dead_lettered,
        )
        now = time.time()
        for name, at, what in (
            ("read", stats.last_read_at, "the usage stream last answered a read"),
            ("commit", stats.last_commit_at, "the ledger last committed a batch"),
        ):
            yield GaugeMetricFamily(
                f"trunkline_usage_ingest_last_{name}_age_seconds",
                f"Seconds since {what} (since this worker started, before it first did)",
                value=max(now - (self._started_at if at is None else at), 0.0),
            )
        try:
            backlog = self._reader.backlog()
        except Exception as exc:  # Redis away: the read age grows meanwhile
            log.debug("usage backlog unknown: %s", type(exc).__name__)
            return
        yield GaugeMetricFamily(
            "trunkline_usage_stream_backlog",
            "Usage events in the stream not in the ledger yet (every worker's, not only this "
            "one's): billing lags by these",
            value=backlog,
        )
