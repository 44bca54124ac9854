"""Prometheus metrics of quota enforcement, registered on the gateway's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class QuotaMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.degraded = Gauge(
            "trunkline_quota_store_degraded",
            "1 while the shared quota store is unreachable and this process limits on its own",
            registry=self.registry,
        )
        self.store_errors = Counter(
            "trunkline_quota_store_errors",
            "Quota store operations that failed because the store was unreachable",
            ["operation"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "trunkline_quota_decisions",
            "Quota decisions: outcome (admitted, rate_limited, quota_exhausted, unavailable), "
            "the limit that refused, and who decided (store or local)",
            ["outcome", "limit", "decided_by"],
            registry=self.registry,
        )
        self.lost_settles = Counter(
            "trunkline_quota_settles_dropped",
            "Settles given up (store away too long): their reservations stay charged in full",
            registry=self.registry,
        )
