"""A fast reader of the few vLLM ``/metrics`` series the gateway routes and admits on.

The scraper reads every engine's page ten times a second, so this skips the general Prometheus
parser (:func:`trunkline.engines.metrics.parse_vllm_metrics`, ~1.7 ms a page) for a search of
the raw bytes for each series named in ``_SERIES``. Samples of one series are summed over their
labels (a server with several engine cores reports one sample each); KV-cache usage is averaged.

Names are current vLLM's (0.32, V1 engine, no ``gpu_`` prefix); the pre-0.9 ``gpu_`` names and
``time_per_output_token_seconds`` are read when the current ones are absent, never both.

The KV-cache size (``vllm:cache_config_info``'s ``num_gpu_blocks`` times ``block_size`` labels)
and the engine's block size change only when an engine restarts: :func:`scan_cache_config` is a
separate read, done by the scraper only while they are unknown or after a restart (see
:func:`restarted`: the process's ``process_start_time_seconds`` changed, or where the page does
not say it, a cumulative counter went backwards).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "CacheConfig",
    "MetricsScan",
    "restarted",
    "scan_cache_config",
    "scan_kv_capacity",
    "scan_metrics",
]

# slot indices
_RUNNING, _WAITING, _KV, _KV_OLD = 0, 1, 2, 3
_QUERIES, _QUERIES_OLD, _HITS, _HITS_OLD = 4, 5, 6, 7
_PROMPT, _PREFILL_SUM, _PREFILL_COUNT = 8, 9, 10
_ITL_SUM, _ITL_COUNT, _TPOT_SUM, _TPOT_COUNT = 11, 12, 13, 14
_STARTED = 15
_SLOTS = 16

_SERIES: dict[bytes, int] = {
    b"vllm:num_requests_running": _RUNNING,
    b"vllm:num_requests_waiting": _WAITING,
    b"vllm:kv_cache_usage_perc": _KV,
    b"vllm:gpu_cache_usage_perc": _KV_OLD,
    b"vllm:prefix_cache_queries_total": _QUERIES,
    b"vllm:gpu_prefix_cache_queries_total": _QUERIES_OLD,
    b"vllm:prefix_cache_hits_total": _HITS,
    b"vllm:gpu_prefix_cache_hits_total": _HITS_OLD,
    b"vllm:prompt_tokens_total": _PROMPT,
    b"vllm:request_prefill_time_seconds_sum": _PREFILL_SUM,
    b"vllm:request_prefill_time_seconds_count": _PREFILL_COUNT,
    b"vllm:inter_token_latency_seconds_sum": _ITL_SUM,
    b"vllm:inter_token_latency_seconds_count": _ITL_COUNT,
    b"vllm:time_per_output_token_seconds_sum": _TPOT_SUM,
    b"vllm:time_per_output_token_seconds_count": _TPOT_COUNT,
    b"process_start_time_seconds": _STARTED,
}
_KEYS = tuple((b"\n" + name, slot) for name, slot in _SERIES.items())
_INF = float("inf")


@dataclass(frozen=True, slots=True)
class MetricsScan:
    """One page's gauges and cumulative counters (which only grow, unless the engine restarts)."""

    running: float = 0.0
    waiting: float = 0.0
    kv_usage: float = 0.0
    """Mean over the page's engine cores, 0..1."""
    prefix_cache_queries: float = 0.0
    prefix_cache_hits: float = 0.0
    prompt_tokens: float = 0.0
    """Prompt tokens of requests whose prefill finished, cached ones included."""
    prefill_seconds: float = 0.0
    """Summed prefill time of those requests (``request_prefill_time_seconds``; 0 on engines
    without it: time to first token is no stand-in, it counts queueing too)."""
    prefill_requests: float = 0.0
    itl_seconds: float = 0.0
    """Summed time between output tokens, and how many such gaps: ``decode_step_s`` is the
    ratio of their increments."""
    itl_count: float = 0.0
    started_at: float = 0.0
    """When the server process started (``process_start_time_seconds``, which a page of vLLM
    has even with ``--disable-log-stats``; 0: not said, as in Prometheus multiprocess mode)."""
    gauges_found: bool = field(default=True, compare=False)
    """The page has vLLM's running or waiting gauge: it is an engine's page (a proxy's HTML
    page answered 200 would read as an idle engine)."""


def scan_metrics(page: bytes) -> MetricsScan:
    """The series routing needs from a Prometheus text page; absent series read as 0."""
    sums = [0.0] * _SLOTS
    counts = [0] * _SLOTS
    if not page.startswith(b"\n"):
        page = b"\n" + page  # so a sample on the first line is found too
    find, size = page.find, len(page)
    for key, slot in _KEYS:
        # ``find`` runs in C: a few hundred microseconds less per page than a Python loop
        # over every line. A sample line is "\nNAME{labels} value" or "\nNAME value".
        at = find(key)
        while at != -1:
            start = at + len(key)
            end = find(b"\n", start)
            end = size if end == -1 else end
            after = page[start : start + 1]
            if after == b"{":
                value = page[page.rfind(b"}", start, end) + 1 : end]
            elif after == b" ":
                value = page[start:end]
            else:  # a longer name sharing this prefix (e.g. ``..._waiting_by_reason``)
                at = find(key, start)
                continue
            try:
                sample = float(value.split(None, 1)[0])
            except (ValueError, IndexError):
                sample = -1.0
            # A malformed sample is skipped, not fatal to the whole page; so is one no engine
            # can mean (NaN, infinite, negative: every series read counts or shares something).
            if 0.0 <= sample < _INF:
                sums[slot] += sample
                counts[slot] += 1
            at = find(key, end)

    def pick(current: int, old: int) -> float:
        return sums[current] if counts[current] else sums[old]

    kv_slot = _KV if counts[_KV] else _KV_OLD
    itl = (_ITL_SUM, _ITL_COUNT) if counts[_ITL_SUM] else (_TPOT_SUM, _TPOT_COUNT)
    return MetricsScan(
        running=sums[_RUNNING],
        waiting=sums[_WAITING],
        kv_usage=sums[kv_slot] / counts[kv_slot] if counts[kv_slot] else 0.0,
        prefix_cache_queries=pick(_QUERIES, _QUERIES_OLD),
        prefix_cache_hits=pick(_HITS, _HITS_OLD),
        prompt_tokens=sums[_PROMPT],
        prefill_seconds=sums[_PREFILL_SUM],
        prefill_requests=sums[_PREFILL_COUNT],
        itl_seconds=sums[itl[0]],
        itl_count=sums[itl[1]],
        started_at=sums[_STARTED] if counts[_STARTED] == 1 else 0.0,
        gauges_found=bool(counts[_RUNNING] or counts[_WAITING]),
    )


_CACHE_CONFIG = b"\nvllm:cache_config_info{"


class CacheConfig(NamedTuple):
    """What an engine's ``vllm:cache_config_info`` says of its KV cache."""

    kv_capacity_tokens: int | None = None
    """Tokens it holds, summed over the page's engine cores (None: not said)."""
    block_size: int | None = None
    """Tokens per block, in which the engine hashes prompts for its prefix cache (None: not
    said). Engine cores share one (vLLM's ``--block-size``); the first sample's is read."""


def scan_cache_config(page: bytes) -> CacheConfig:
    """The KV-cache size, ``num_gpu_blocks`` times ``block_size`` of the page's
    ``vllm:cache_config_info`` summed over its engine cores (None when any sample's labels are
    missing or not integers, e.g. ``"None"`` before the engine sized its cache), and the block
    size (known even then)."""
    if not page.startswith(b"\n"):
        page = b"\n" + page
    total: int | None = 0
    first_block_size: int | None = None
    at = page.find(_CACHE_CONFIG)
    while at != -1:
        start = at + len(_CACHE_CONFIG) - 1  # at the "{": every label follows "{" or ","
        end = page.find(b"}", start)
        if end == -1:
            total = None  # a page cut short
            break
        labels = page[start:end]
        blocks = _int_label(labels, b"num_gpu_blocks")
        block_size = _int_label(labels, b"block_size")
        if first_block_size is None and block_size:
            first_block_size = block_size
        if blocks is None or block_size is None or total is None:
            total = None
        else:
            total += blocks * block_size
        at = page.find(_CACHE_CONFIG, end)
    return CacheConfig(total or None, first_block_size)


def scan_kv_capacity(page: bytes) -> int | None:
    """Tokens the engine's KV cache holds (:func:`scan_cache_config`); None when the page does
    not say."""
    return scan_cache_config(page).kv_capacity_tokens


def _int_label(labels: bytes, name: bytes) -> int | None:
    """The integer value of label ``name`` in ``{a="1",b="2"`` (a whole label name only); None
    when it is not a count (negative, or not an integer)."""
    for before in (b"{", b","):
        key = before + name + b'="'
        at = labels.find(key)
        if at != -1:
            start = at + len(key)
            try:
                value = int(labels[start : labels.find(b'"', start)])
            except ValueError:
                return None
            return value if value >= 0 else None  # a negative size would shrink the index
    return None


START_TIME_JITTER_S = 2.0
"""How far apart two readings of one process's ``process_start_time_seconds`` may be: it is
the host's boot time plus the process's clock ticks, and the boot time moves by a second as
the clock is adjusted. An engine takes longer than that to start and serve its first page."""


def restarted(previous: MetricsScan, current: MetricsScan) -> bool:
    """The engine behind the endpoint restarted: its process started at another time (by more
    than :data:`START_TIME_JITTER_S`), or a cumulative counter went backwards (a page that does
    not say when it started)."""
    if previous.started_at and current.started_at:
        return abs(current.started_at - previous.started_at) > START_TIME_JITTER_S
    return (
        current.prompt_tokens < previous.prompt_tokens
        or current.prefix_cache_queries < previous.prefix_cache_queries
        or current.itl_count < previous.itl_count
        or current.prefill_requests < previous.prefill_requests
    )
