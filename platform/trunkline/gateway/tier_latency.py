"""Time to first token and time per output token by tier, the two objectives a tier's SLO names
(``ttft_slo_ms``, ``itl_slo_ms``): what an operator reads to see whether gold gets what it pays
for. Observed as each request is metered; only streamed answers that sent tokens count (a plain
answer's first byte comes with its whole generation, which is no time to first token).
The one label, ``tier``, is a tier of the configuration: a handful of series, whatever the
traffic."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from trunkline.kit.request_metrics import LATENCY_BUCKETS

__all__ = ["TierLatency"]

_TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
"""Dense where decode steps lie (10-100 ms), with the bundled tiers' ITL SLOs (50 and 100 ms)
among the bounds."""


class TierLatency:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.ttft = Histogram(
            "trunkline_tier_ttft_seconds",
            "Seconds from routing a streamed request (after its quota check; any admission "
            "hold included; a cascade's first attempt) to its first token, by tier",
            ["tier"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tpot = Histogram(
            "trunkline_tier_tpot_seconds",
            "Mean seconds between a streamed answer's tokens after the first (a whole answer "
            "of two tokens or more), by the caller's tier",
            ["tier"],
            buckets=_TPOT_BUCKETS,
            registry=registry,
        )
        self._children: dict[str, tuple[Histogram, Histogram]] = {}
        """Both histograms' children by tier: ``labels()`` costs more than the observation."""

    def observe(self, tier: str, ttft_s: float, latency_s: float, tokens: int | None) -> None:
        """A streamed answer of ``tier`` whose first token came ``ttft_s`` after the request
        and whose last ``latency_s`` after it; ``tokens``: how many it generated, if whole."""
        children = self._children.get(tier)
        if children is None:
            children = self._children[tier] = (self.ttft.labels(tier), self.tpot.labels(tier))
        ttft, tpot = children
        ttft.observe(ttft_s)
        if tokens is not None and tokens > 1:
            tpot.observe(max(latency_s - ttft_s, 0.0) / (tokens - 1))
