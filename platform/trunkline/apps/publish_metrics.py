"""What this process's snapshot publishing did, as Prometheus metrics: builds by kind and how
long each took, what became of each (stored, refused because another control plane stored a
newer version first, nothing to patch, failed; or left to the check, not built), the version
it last stored and when, and the outcomes of its periodic checks. Recorded by ``Runtime`` and
``republish_if_stale`` in the threads that publish; read at each scrape of the control plane's
``/metrics``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["Build", "Check", "PublishMetrics"]

Kind = Literal["whole", "shards"]
"""A whole build, or the changed keys' shards patched into what the store holds."""
Check = Literal[
    "skipped",
    "stuck",
    "unchanged",
    "expired_keys",
    "current",
    "vouched",
    "in_flight",
    "published",
    "refused",
    "failed",
]
_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Build:
    """One attempt to build and store; its ``outcome`` is set by whoever stored it."""

    outcome: str = "failed"
    """stored, refused, no_base (``snapshot.store.Patched``'s values) or failed."""
    version: int | None = None


class PublishMetrics(Collector):
    """Thread-safe (prometheus_client's metrics are); registered in no registry of its own:
    each control-plane app's registry registers it."""

    def __init__(self) -> None:
        self._builds = Counter(
            "trunkline_snapshot_builds",
            "Snapshot builds this process made to publish, by kind: whole, or the changed keys' "
            "shards patched into the snapshot stored",
            ["kind"],
            registry=None,
        )
        self._seconds = Histogram(
            "trunkline_snapshot_build_seconds",
            "Seconds one build took, by kind: reading the database, encoding, storing",
            ["kind"],
            buckets=_SECONDS,
            registry=None,
        )
        self._outcomes = Counter(
            "trunkline_snapshot_publishes",
            "What became of each build, by kind and outcome: stored; refused (another control "
            "plane stored a newer version first: built again); no_base (no snapshot in parts "
            "stored to patch: built whole); failed (the store or the database raised); "
            "left_to_check (not built: a call to the store failed moments ago, so the change "
            "after a write waits for the periodic check; kind: what it would have built)",
            ["kind", "outcome"],
            registry=None,
        )
        self._checks = Counter(
            "trunkline_snapshot_checks",
            "The periodic checks that the store holds the database's configuration, by "
            "outcome: skipped (a publish under way), stuck (one still under way after the "
            "check waited for it: /healthz says not in sync), unchanged (nothing moved), "
            "expired_keys (expired keys' shards published), current (the store held it: "
            "another process published it, known by the state it was built from or by a "
            "build), vouched (the "
            "store held it, found by a build, and did not say so: stored again, unchanged, "
            "under a newer version that says what it was built from), in_flight (the store "
            "lacks only other control planes' key changes, which they are publishing: no "
            "build; one still missing at the next check has its shards patched in), published "
            "(the store did not hold it: published whole, or missing key changes' shards), "
            "refused (every publish refused: other control planes kept storing newer "
            "versions; in_sync left as it was), failed",
            ["outcome"],
            registry=None,
        )
        self._lock = threading.Lock()
        self._stored: tuple[int, float] | None = None
        """The version this process last stored, and when (epoch seconds)."""

    @contextmanager
    def building(self, kind: Kind) -> Iterator[Build]:
        """Times and counts the block's build; one that raises counts as ``failed``."""
        build, started = Build(), time.perf_counter()
        try:
            yield build
        except Exception:
            build.outcome = "failed"
            raise
        finally:
            self._builds.labels(kind).inc()
            self._seconds.labels(kind).observe(time.perf_counter() - started)
            self._outcomes.labels(kind, build.outcome).inc()
            if build.outcome == "stored" and build.version is not None:
                self._stored_version(build.version)

    def left_to_check(self, kind: Kind) -> None:
        """A publish not built: the store failed a call moments ago (``StoreOutage``)."""
        self._outcomes.labels(kind, "left_to_check").inc()

    def _stored_version(self, version: int) -> None:
        with self._lock:  # publishes in parallel threads: the newest version stays
            if self._stored is None or version > self._stored[0]:
                self._stored = (version, time.time())

    def checked(self, outcome: Check) -> None:
        self._checks.labels(outcome).inc()

    def describe(self) -> Iterator[Metric]:
        """Its names, so a registry refuses a second metric of one of them."""
        for metric in (self._builds, self._seconds, self._outcomes, self._checks):
            yield from metric.describe()
        yield GaugeMetricFamily("trunkline_snapshot_published_version", "")
        yield GaugeMetricFamily("trunkline_snapshot_published_age_seconds", "")

    def collect(self) -> Iterator[Metric]:
        for metric in (self._builds, self._seconds, self._outcomes, self._checks):
            yield from metric.collect()
        stored = self._stored
        if stored is None:
            return
        version, at = stored
        yield GaugeMetricFamily(
            "trunkline_snapshot_published_version",
            "The snapshot version this process last stored",
            value=float(version),
        )
        yield GaugeMetricFamily(
            "trunkline_snapshot_published_age_seconds",
            "Seconds since this process last stored a snapshot version",
            value=max(time.time() - at, 0.0),
        )
