"""vLLM's Prometheus metrics for a simulated engine, and a parser for any vLLM ``/metrics`` page.

Names and labels follow current vLLM (V1 engine, no ``gpu_`` prefix): gauges and counters carry
``model_name`` and ``engine`` labels; ``vllm:cache_config_info`` carries the cache config as
labels plus ``engine``, as vLLM's does. Each :class:`EngineMetrics` owns its own
``CollectorRegistry``, so many simulated engines can live in one process. Latency histograms
are in engine time: with a ``time_scale`` below 1 they show what the modelled accelerator would
take, not the shortened wall-clock time.

:func:`parse_vllm_metrics` reads the load signals the gateway routes on from real vLLM and
simulated engines alike, and also accepts the pre-0.9 ``gpu_``-prefixed names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from trunkline.engines.core import EngineCore
from trunkline.engines.events import TokenEvent

__all__ = ["METRICS_CONTENT_TYPE", "EngineLoad", "EngineMetrics", "parse_vllm_metrics"]

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST

_TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
_ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
_E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
_LABELS = ("model_name", "engine")


class _CoreCollector:
    """Reads gauges and counters straight from the core at scrape time."""

    def __init__(self, core: EngineCore, model_name: str, engine: str) -> None:
        self._core = core
        self._labels = [model_name, engine]
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        core, labels = self._core, self._labels
        yield self._gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            core.num_requests_running,
        )
        yield self._gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            core.num_requests_waiting,
        )
        yield self._gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            core.kv_cache_usage,
        )
        counters = core.counters
        for name, documentation, value in (
            (
                "vllm:prefix_cache_queries",
                "Prefix cache queries, in terms of number of queried tokens.",
                counters.prefix_cache_queries,
            ),
            (
                "vllm:prefix_cache_hits",
                "Prefix cache hits, in terms of number of cached tokens.",
                counters.prefix_cache_hits,
            ),
            (
                "vllm:num_preemptions",
                "Cumulative number of preemption from the engine.",
                counters.preemptions,
            ),
            ("vllm:prompt_tokens", "Number of prefill tokens processed.", counters.prompt_tokens),
            (
                "vllm:generation_tokens",
                "Number of generation tokens processed.",
                counters.generation_tokens,
            ),
        ):
            family = CounterMetricFamily(name, documentation, labels=_LABELS)
            family.add_metric(labels, value)
            yield family
        success = CounterMetricFamily(
            "vllm:request_success",
            "Count of successfully processed requests.",
            labels=[*_LABELS, "finished_reason"],
        )
        for reason, count in counters.finished.items():
            success.add_metric([*labels, reason], count)
        yield success
        yield self._cache_config_info()

    def _gauge(self, name: str, documentation: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, documentation, labels=_LABELS)
        family.add_metric(self._labels, value)
        return family

    def _cache_config_info(self) -> GaugeMetricFamily:
        info = {
            "block_size": str(self._core.profile.block_size),
            "cache_dtype": "auto",
            "enable_prefix_caching": str(self._core.enable_prefix_caching),
            "gpu_memory_utilization": "0.9",
            "num_cpu_blocks": "None",
            "num_gpu_blocks": str(self._core.profile.kv_cache_blocks),
            "prefix_caching_hash_algo": "sha256",
            "engine": self._engine,
        }
        family = GaugeMetricFamily(
            "vllm:cache_config_info", "Information of the LLMEngine CacheConfig", labels=list(info)
        )
        family.add_metric(list(info.values()), 1.0)
        return family


class EngineMetrics:
    """The ``/metrics`` page of one simulated engine."""

    def __init__(self, core: EngineCore, model_name: str, *, engine: str = "0") -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_CoreCollector(core, model_name, engine))
        self._ttft = self._histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            _TTFT_BUCKETS,
            model_name,
            engine,
        )
        self._itl = self._histogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            _ITL_BUCKETS,
            model_name,
            engine,
        )
        self._queue = self._histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            _E2E_BUCKETS,
            model_name,
            engine,
        )
        self._prefill = self._histogram(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            _E2E_BUCKETS,
            model_name,
            engine,
        )
        self._e2e = self._histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            _E2E_BUCKETS,
            model_name,
            engine,
        )

    def _histogram(
        self,
        name: str,
        documentation: str,
        buckets: tuple[float, ...],
        model_name: str,
        engine: str,
    ) -> Histogram:
        histogram = Histogram(name, documentation, _LABELS, buckets=buckets, registry=self.registry)
        return histogram.labels(model_name, engine)

    def observe(self, events: Iterable[TokenEvent]) -> None:
        """Record the latencies carried by a step's token events."""
        for event in events:
            if event.first:
                self._ttft.observe(event.latency)
                self._queue.observe(event.queue_s)
                self._prefill.observe(event.prefill_s)
            else:
                self._itl.observe(event.latency)
            if event.usage is not None:
                self._e2e.observe(event.usage.e2e_latency)

    def render(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """Load signals of one engine endpoint, summed over its engine cores (mean KV usage)."""

    running: float = 0.0
    waiting: float = 0.0
    kv_usage: float = 0.0
    prefix_cache_queries: float = 0.0
    prefix_cache_hits: float = 0.0
    block_size: int | None = None
    num_gpu_blocks: int | None = None

    @property
    def prefix_cache_hit_rate(self) -> float:
        if self.prefix_cache_queries <= 0:
            return 0.0
        return self.prefix_cache_hits / self.prefix_cache_queries


# Current names first: an engine exposing both (vLLM 0.9-0.10) must not be counted twice.
_KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
_QUERIES = ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")
_HITS = ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")


def parse_vllm_metrics(text: str, *, model_name: str | None = None) -> EngineLoad:
    """Extract :class:`EngineLoad` from a vLLM ``/metrics`` page (optionally one model's)."""
    samples: dict[str, list[float]] = {}
    cache_info: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:cache_config_info":
                cache_info = cache_info or dict(sample.labels)
            elif model_name is None or sample.labels.get("model_name", model_name) == model_name:
                samples.setdefault(sample.name, []).append(sample.value)

    def first(*names: str) -> list[float]:
        return next((samples[name] for name in names if name in samples), [])

    kv_usage = first(*_KV_USAGE)
    return EngineLoad(
        running=sum(first("vllm:num_requests_running")),
        waiting=sum(first("vllm:num_requests_waiting")),
        kv_usage=sum(kv_usage) / len(kv_usage) if kv_usage else 0.0,
        prefix_cache_queries=sum(first(*_QUERIES)),
        prefix_cache_hits=sum(first(*_HITS)),
        block_size=_int_or_none(cache_info.get("block_size")),
        num_gpu_blocks=_int_or_none(cache_info.get("num_gpu_blocks")),
    )


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
