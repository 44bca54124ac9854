"""vLLM's /metrics page for a simulated engine, and parsing it (and real vLLM's) back."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.engines.helpers import events_of, run_until_idle, tiny_profile

from trunkline.engines import EngineCore, EngineMetrics, parse_vllm_metrics


def sample_values(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(**extra: str) -> frozenset[tuple[str, str]]:
    return frozenset({"model_name": "llama", "engine": "0", **extra}.items())


def test_a_finished_workload_shows_in_vllm_counters_and_histograms() -> None:
    core = EngineCore(tiny_profile())
    metrics = EngineMetrics(core, "llama")
    core.add_request("a", list(range(100, 109)), 3, 0.0)
    core.add_request("b", list(range(100, 109)), 3, 0.0)
    steps = run_until_idle(core)
    for step in steps:
        metrics.observe(step.events)
    values = sample_values(metrics.render().decode())

    assert values[("vllm:prompt_tokens_total", labels())] == 18
    assert values[("vllm:generation_tokens_total", labels())] == 6
    assert values[("vllm:request_success_total", labels(finished_reason="length"))] == 2
    assert values[("vllm:prefix_cache_queries_total", labels())] == core.prefix_cache_queries
    assert values[("vllm:prefix_cache_hits_total", labels())] == core.prefix_cache_hits
    assert values[("vllm:num_requests_running", labels())] == 0
    assert values[("vllm:kv_cache_usage_perc", labels())] == 0
    assert values[("vllm:time_to_first_token_seconds_count", labels())] == 2
    first_a = events_of(steps, "a")[0]
    first_b = events_of(steps, "b")[0]
    assert values[("vllm:time_to_first_token_seconds_sum", labels())] == pytest.approx(
        first_a.latency + first_b.latency
    )
    assert values[("vllm:inter_token_latency_seconds_count", labels())] == 4
    assert values[("vllm:e2e_request_latency_seconds_count", labels())] == 2


def test_cache_config_info_describes_the_kv_cache() -> None:
    core = EngineCore(tiny_profile())
    text = EngineMetrics(core, "llama").render().decode()
    info = next(
        sample.labels
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "vllm:cache_config_info"
    )
    assert info["block_size"] == "4"
    assert info["num_gpu_blocks"] == "64"
    assert info["enable_prefix_caching"] == "True"
    assert info["engine"] == "0"


def test_parse_reads_back_what_a_simulated_engine_renders() -> None:
    core = EngineCore(tiny_profile(max_num_seqs=1))
    metrics = EngineMetrics(core, "llama")
    core.add_request("a", list(range(100, 109)), 3, 0.0)
    core.add_request("b", list(range(100, 109)), 3, 0.0)
    core.step(0.0)
    load = parse_vllm_metrics(metrics.render().decode())
    assert (load.running, load.waiting) == (1, 1)
    assert load.kv_usage == pytest.approx(core.kv_cache_usage)
    assert load.kv_usage > 0
    assert load.block_size == 4
    assert load.num_gpu_blocks == 64


def test_engines_in_one_process_keep_separate_metrics() -> None:
    busy, idle = EngineCore(tiny_profile()), EngineCore(tiny_profile())
    busy_metrics, idle_metrics = EngineMetrics(busy, "llama"), EngineMetrics(idle, "llama")
    busy.add_request("a", [1, 2, 3, 4, 5], 2, 0.0)
    assert parse_vllm_metrics(busy_metrics.render().decode()).waiting == 1
    assert parse_vllm_metrics(idle_metrics.render().decode()).waiting == 0


REAL_VLLM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 3.0
vllm:num_requests_running{engine="1",model_name="llama"} 2.0
vllm:num_requests_running{engine="0",model_name="other"} 7.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama"} 4.0
vllm:num_requests_waiting{engine="1",model_name="llama"} 0.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. DEPRECATED.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="llama"} 0.9
vllm:gpu_cache_usage_perc{engine="1",model_name="llama"} 0.9
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="llama"} 0.25
# HELP vllm:prefix_cache_queries_total Prefix cache queries.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="llama"} 1000.0
vllm:prefix_cache_queries_total{engine="1",model_name="llama"} 500.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="llama"} 600.0
vllm:prefix_cache_hits_total{engine="1",model_name="llama"} 150.0
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="128",engine="0",num_gpu_blocks="900"} 1.0
"""


def test_parse_sums_engine_cores_of_one_model_and_prefers_current_names() -> None:
    load = parse_vllm_metrics(REAL_VLLM, model_name="llama")
    assert (load.running, load.waiting) == (5, 4)
    assert load.kv_usage == pytest.approx(0.375)  # mean of the current metric, not gpu_*
    assert (load.prefix_cache_queries, load.prefix_cache_hits) == (1500, 750)
    assert load.prefix_cache_hit_rate == pytest.approx(0.5)
    assert load.block_size == 128


def test_parse_without_a_model_counts_every_model() -> None:
    assert parse_vllm_metrics(REAL_VLLM).running == 12


def test_parse_understands_pre_0_9_gpu_prefixed_names() -> None:
    old = """\
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="llama"} 0.75
# TYPE vllm:gpu_prefix_cache_queries counter
vllm:gpu_prefix_cache_queries_total{model_name="llama"} 80.0
# TYPE vllm:gpu_prefix_cache_hits counter
vllm:gpu_prefix_cache_hits_total{model_name="llama"} 20.0
"""
    load = parse_vllm_metrics(old)
    assert load.kv_usage == 0.75
    assert (load.prefix_cache_queries, load.prefix_cache_hits) == (80, 20)
    assert load.block_size is None
