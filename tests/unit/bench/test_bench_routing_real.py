"""The real-vLLM section's pure parts: its workload, how answers are read, the summary, and
the snapshot of the gateway it starts (no vLLM needed here)."""

from __future__ import annotations

import math

import pytest

from trunkline.bench._gateway_server import build_snapshot, parse_engine
from trunkline.bench._routing_real import (
    RealLoad,
    RequestRecord,
    build_requests,
    read_answer,
    summarize,
)


def test_requests_repeat_a_few_preambles_and_another_seed_gives_fresh_texts() -> None:
    load = RealLoad(requests=50, preambles=5, preamble_words=40, question_words=4)
    requests = build_requests(load, seed=1)
    assert len(requests) == 50
    preambles = {messages[0]["content"] for messages in requests}
    assert 1 < len(preambles) <= 5
    assert build_requests(load, seed=1) == requests  # repeatable
    other = {messages[0]["content"] for messages in build_requests(load, seed=2)}
    assert not preambles & other  # no variant finds another's preambles cached


def test_an_answer_is_read_from_usage_and_anything_else_counts_as_an_error() -> None:
    body = {
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 16,
            "prompt_tokens_details": {"cached_tokens": 64},
        }
    }
    assert read_answer(200, body, 0.5) == RequestRecord(True, 100, 64, 16, 0.5)
    no_details = {"usage": {"prompt_tokens": 10, "completion_tokens": 1}}
    assert read_answer(200, no_details, 0.1).cached_tokens == 0
    assert not read_answer(503, {"error": {"message": "x"}}, 0.1).ok
    assert not read_answer(200, {"choices": []}, 0.1).ok


def test_the_summary_gives_the_cached_share_throughput_and_errors() -> None:
    records = [
        RequestRecord(True, 100, 50, 10, 0.2),
        RequestRecord(True, 300, 250, 10, 0.4),
        RequestRecord(False),
    ]
    summary = summarize(records, elapsed_s=2.0)
    assert summary["cached_token_share"] == pytest.approx(0.75)
    assert summary["requests_per_s"] == 1.0
    assert summary["output_tokens_per_s"] == 10.0
    assert summary["errors"] == 1.0
    assert summary["latency_p50_s"] == pytest.approx(0.3)
    assert math.isnan(summarize([RequestRecord(False)], 1.0)["latency_p50_s"])


def test_the_gateway_serves_every_engine_in_one_pool_with_its_kv_events() -> None:
    engines = [parse_engine("http://127.0.0.1:1", 0), parse_engine("http://h:2,tcp://h:3", 1)]
    world = build_snapshot(
        engines=engines, model="tiny-llama", alias="chat", block_size=32, server_secret=b"s" * 32
    )
    (pool,) = world.snapshot.pools.values()
    assert [e.url for e in pool.endpoints] == ["http://127.0.0.1:1", "http://h:2"]
    assert [e.kv_events for e in pool.endpoints] == [None, "tcp://h:3"]
    assert (pool.model, pool.block_size) == ("tiny-llama", 32)
    assert world.snapshot.aliases["chat"].pools == (pool.name,)
    assert world.api_key
    with pytest.raises(ValueError, match="at least one --engine"):
        build_snapshot(engines=[], model="m", alias="a", block_size=32, server_secret=b"s" * 32)
