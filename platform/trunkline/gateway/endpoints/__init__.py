"""The gateway's view of its engines: load scraped from vLLM ``/metrics``, this gateway's own
requests in flight, health with outlier ejection, and optionally the engines' KV-cache events.

:class:`EngineMonitor` runs it; :class:`EngineState` is what the request path, routing and
admission read (``loads()``, ``in_service()``, ``wait_changed()``) and write (``sent()``,
``first_byte()``, ``ended()``, ``failed()``, ``succeeded()``). See docs/gateway.md.
"""

from trunkline.gateway.endpoints.health import EjectionPolicy, Health
from trunkline.gateway.endpoints.kv_subscriber import KvEventSink, KvEventSubscriber, apply_message
from trunkline.gateway.endpoints.metrics import EndpointCollector, KvEventCollector
from trunkline.gateway.endpoints.monitor import EngineMonitor, ejection_policy
from trunkline.gateway.endpoints.rates import Rates, next_rates
from trunkline.gateway.endpoints.scan import (
    CacheConfig,
    MetricsScan,
    restarted,
    scan_cache_config,
    scan_kv_capacity,
    scan_metrics,
)
from trunkline.gateway.endpoints.scraper import MetricsScraper
from trunkline.gateway.endpoints.state import EngineState, Flight

__all__ = [
    "CacheConfig",
    "EjectionPolicy",
    "EndpointCollector",
    "EngineMonitor",
    "EngineState",
    "Flight",
    "Health",
    "KvEventCollector",
    "KvEventSink",
    "KvEventSubscriber",
    "MetricsScan",
    "MetricsScraper",
    "Rates",
    "apply_message",
    "ejection_policy",
    "next_rates",
    "restarted",
    "scan_cache_config",
    "scan_kv_capacity",
    "scan_metrics",
]
