"""How the gateway's gauges add up over its worker processes (``trunkline gateway --workers N``),
whose metrics a scrape of any one of them shows together (:mod:`trunkline.kit.metrics_share`).

Counters and histograms are summed over every worker the gateway has run. Each worker keeps
its own view of the engines (its scrapes, ejections, KV-event subscription) and of the
configuration, so a state every worker has is reported at its worst: an endpoint is in service
only while no worker has it ejected, the configuration version is the oldest any worker serves,
ages are the largest. What each worker holds on its own is summed.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from trunkline.kit.metrics_merge import GaugeRule
from trunkline.kit.metrics_share import MetricsShare, SharedMetrics

__all__ = ["GAUGE_RULES", "PER_ENDPOINT", "shared_metrics"]

GAUGE_RULES: dict[str, GaugeRule] = {
    # per endpoint (gateway/endpoints/metrics.py)
    "trunkline_endpoint_in_service": "min",
    "trunkline_endpoint_requests_in_flight": "sum",
    "trunkline_endpoint_metrics_age_seconds": "age",
    # the engine's page as each worker last read it, at most a scrape interval apart; waiting
    # adds what that worker sent since its read
    "trunkline_endpoint_running": "max",
    "trunkline_endpoint_waiting": "max",
    "trunkline_endpoint_kv_cache_usage": "max",
    # read by each worker from the same engine; a mismatch any worker sees is one
    "trunkline_endpoint_block_size": "max",
    "trunkline_endpoint_block_size_mismatch": "max",
    "trunkline_kv_events_connected": "min",
    # what /health says (gateway/health_metrics.py)
    "trunkline_snapshot_store_reachable": "min",
    "trunkline_snapshot_version": "min",
    "trunkline_snapshot_checked_age_seconds": "age",
    "trunkline_snapshot_age_seconds": "age",
    "trunkline_usage_events_held": "sum",
    # quota and admission (quota/metrics.py, gateway/admission/metrics.py)
    "trunkline_quota_store_degraded": "max",
    "trunkline_admission_held_requests": "sum",
}


PER_ENDPOINT = frozenset(
    {
        "trunkline_endpoint_ejections",
        "trunkline_endpoint_failures",
        "trunkline_kv_events_applied",
        "trunkline_kv_event_clears",
        "trunkline_kv_event_replays",
    }
)
"""The counters of an endpoint the workers serve: a stopped worker's counts of an endpoint
leave the scrape once it left the configuration (``metrics_merge.merge``'s ``scoped``)."""


def shared_metrics(registry: CollectorRegistry, directory: Path) -> SharedMetrics:
    return SharedMetrics(registry, MetricsShare(directory), GAUGE_RULES, scoped=PER_ENDPOINT)
