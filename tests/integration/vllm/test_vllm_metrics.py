"""``parse_vllm_metrics`` reads real vLLM's ``/metrics``: the names it routes on exist there
and mean what the parser assumes."""

from __future__ import annotations

import time
from collections.abc import Callable

from support.vllm import VllmServer, unique_prompt
from trunkline.engines.metrics import EngineLoad, parse_vllm_metrics

ROUTING_SIGNALS = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:cache_config_info",
)


def _load(server: VllmServer) -> EngineLoad:
    return parse_vllm_metrics(server.metrics(), model_name=server.model_name)


def _eventually(
    server: VllmServer, check: Callable[[EngineLoad], bool], timeout_s: float = 10.0
) -> EngineLoad:
    """vLLM updates its Prometheus metrics from engine stats a moment after each step."""
    deadline = time.monotonic() + timeout_s
    while True:
        load = _load(server)
        if check(load) or time.monotonic() > deadline:
            return load
        time.sleep(0.05)


def test_every_signal_the_router_reads_is_exposed(vllm_server: VllmServer) -> None:
    samples = {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in vllm_server.metrics().splitlines()
        if line and not line.startswith("#")
    }

    assert set(ROUTING_SIGNALS) <= samples
    load = _load(vllm_server)
    assert load.block_size == vllm_server.block_size
    assert load.num_gpu_blocks is not None and load.num_gpu_blocks > 0
    assert 0.0 <= load.kv_usage <= 1.0


def test_prefix_cache_counters_grow_on_a_repeated_prompt(vllm_server: VllmServer) -> None:
    before = _load(vllm_server)
    prompt = unique_prompt(300)

    first, second = [vllm_server.complete(prompt)["usage"] for _ in range(2)]
    queried = first["prompt_tokens"] + second["prompt_tokens"]
    cached = second["prompt_tokens_details"]["cached_tokens"]
    after = _eventually(
        vllm_server,
        lambda load: load.prefix_cache_queries - before.prefix_cache_queries >= queried,
    )

    assert cached > 0
    assert after.prefix_cache_queries - before.prefix_cache_queries == queried
    assert after.prefix_cache_hits - before.prefix_cache_hits == cached
    # Samples carry the served model name: another model's load reads as zero.
    other = parse_vllm_metrics(vllm_server.metrics(), model_name="another-model")
    assert (other.prefix_cache_queries, other.prefix_cache_hits) == (0, 0)
