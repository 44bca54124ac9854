"""Prometheus metrics of admission decisions, registered on the gateway's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["AdmissionMetrics"]

_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


class AdmissionMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.decisions = Counter(
            "trunkline_admission_decisions",
            "Admission decisions by tier, outcome (admitted, queued, rejected) and reason "
            "(burst, overloaded, slo_unattainable, deadline_exceeded, or none)",
            ["tier", "outcome", "reason"],
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "trunkline_admission_queue_wait_seconds",
            "How long held requests waited before admission, rejection or their client left "
            "(outcome admitted, rejected, cancelled)",
            ["tier", "outcome"],
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.held = Gauge(
            "trunkline_admission_held_requests",
            "Requests held in the admission queues of this process",
            registry=self.registry,
        )

        self._decided: dict[tuple[str, str, str | None], Counter] = {}
        """``decisions``' children by labels: ``labels()`` costs more than the increment."""

    def record(self, tier: str, outcome: str, reason: str | None) -> None:
        key = (tier, outcome, reason)
        child = self._decided.get(key)
        if child is None:
            child = self._decided[key] = self.decisions.labels(tier, outcome, reason or "none")
        child.inc()
