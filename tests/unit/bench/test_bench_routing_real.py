"""The real-vLLM section's pure parts: its workload, how answers are read, the summary, the CPU
accounting, the command that starts its servers and the snapshot of the gateway it starts (no
vLLM needed here)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from trunkline.bench._engine_side import CpuTimes
from trunkline.bench._fidelity_host import FidelityEnv
from trunkline.bench._gateway_server import build_snapshot, parse_engine
from trunkline.bench._routing_real import (
    RealLoad,
    RequestRecord,
    build_requests,
    read_answer,
    summarize,
)
from trunkline.bench._routing_real_cpu import CpuReading, cpu_shares, process_cpu_s
from trunkline.bench.vllm_server import (
    ServedModel,
    VllmEnv,
    VllmServer,
    start_vllm_replicas,
    vllm_command,
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
    engines = [
        parse_engine("http://127.0.0.1:1", 0),
        parse_engine("http://h:2,tcp://h:3", 1),
        parse_engine("http://h:4,tcp://h:5,tcp://h:6", 2),
    ]
    world = build_snapshot(
        engines=engines, model="tiny-llama", alias="chat", block_size=32, server_secret=b"s" * 32
    )
    (pool,) = world.snapshot.pools.values()
    assert [e.url for e in pool.endpoints] == ["http://127.0.0.1:1", "http://h:2", "http://h:4"]
    assert [(e.kv_events, e.kv_replay) for e in pool.endpoints] == [
        (None, None),
        ("tcp://h:3", None),
        ("tcp://h:5", "tcp://h:6"),
    ]
    assert (pool.model, pool.block_size) == ("tiny-llama", 32)
    assert world.snapshot.aliases["chat"].pools == (pool.name,)
    assert world.api_key
    with pytest.raises(ValueError, match="a replay endpoint needs a KV-events endpoint"):
        parse_engine("http://h:7,,tcp://h:8", 3)
    with pytest.raises(ValueError, match="at least one --engine"):
        build_snapshot(engines=[], model="m", alias="a", block_size=32, server_secret=b"s" * 32)


def test_one_replicas_share_of_the_load_halves_requests_clients_and_preambles() -> None:
    load = RealLoad(requests=240, concurrency=8, preambles=40, question_words=20, max_tokens=64)
    one = load.per_replica(2)
    assert (one.requests, one.concurrency, one.preambles) == (120, 4, 20)
    assert (one.preamble_words, one.question_words, one.max_tokens) == (300, 20, 64)
    assert RealLoad(concurrency=1, preambles=1).per_replica(2).concurrency == 1  # never 0


def test_cpu_shares_are_cores_worth_of_each_partys_time_over_the_run() -> None:
    before = CpuReading((CpuTimes(10, 1), CpuTimes(20, 2)), (15.0, 30.0), 5.0, 1.0, 100.0)
    after = CpuReading((CpuTimes(18, 3), CpuTimes(26, 2)), (27.0, 40.0), 7.0, 2.0, 118.0)

    shares = cpu_shares(after - before, elapsed_s=10.0)

    assert shares["cpu_worker_0"] == pytest.approx(0.8)
    assert shares["cpu_worker_0_wait_share"] == pytest.approx(0.2)  # 2 s waiting of 10 busy
    assert shares["cpu_worker_1"] == pytest.approx(0.6)
    assert shares["cpu_worker_1_wait_share"] == 0.0
    assert shares["cpu_workers"] == pytest.approx(1.4)
    # Both replicas used 22 s, their workers' main threads 14 s of it.
    assert shares["cpu_vllm_rest"] == pytest.approx(0.8)
    assert shares["cpu_gateway"] == pytest.approx(0.2)
    assert shares["cpu_load_generator"] == pytest.approx(0.1)
    assert shares["cpu_machine"] == pytest.approx(1.8)
    assert cpu_shares(after - before, elapsed_s=0.0) == {}


def test_process_cpu_time_is_user_plus_system_and_an_ended_process_counts_nothing(
    tmp_path: Path,
) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    (tmp_path / "7").mkdir()
    # The command name may hold spaces and parentheses; utime and stime are fields 14 and 15.
    fields = ["S", "1", "7", "7"] + ["0"] * 7 + [str(3 * ticks), str(ticks)] + ["0"] * 30
    (tmp_path / "7" / "stat").write_text(f"7 (VLLM::Worker (x) 1) {' '.join(fields)}\n")

    assert process_cpu_s([7, 8], proc=tmp_path) == pytest.approx(4.0)


def test_a_server_is_started_on_the_model_it_is_given_under_that_models_name(
    tmp_path: Path,
) -> None:
    model = ServedModel(tmp_path / "models" / "m", "my-model")
    server = VllmServer(8000, 8001, 8002, "1", tmp_path / "log", model_name=model.name)

    command = vllm_command(VllmEnv(tmp_path), model, server, 1024)

    assert command[command.index("serve") + 1] == str(model.path)
    assert command[command.index("--served-model-name") + 1] == "my-model"
    kv_events = command[command.index("--kv-events-config") + 1]
    assert '"topic": "kv@my-model"' in kv_events
    assert '"replay_endpoint": "tcp://*:8002"' in kv_events


def test_the_default_model_is_the_tests_tiny_one_and_the_bench_serves_fidelity_llama(
    tmp_path: Path,
) -> None:
    assert VllmEnv(tmp_path).served_model == ServedModel(
        tmp_path / "trunkline" / "tiny-llama", "tiny-llama"
    )
    assert VllmEnv(tmp_path).model == tmp_path / "trunkline" / "tiny-llama"
    assert FidelityEnv(tmp_path).served_model == ServedModel(
        tmp_path / "trunkline" / "fidelity-llama", "fidelity-llama"
    )


def test_starting_a_model_that_was_never_built_names_the_command_that_builds_it(
    tmp_path: Path,
) -> None:
    missing = ServedModel(tmp_path / "nowhere", "ghost")
    with pytest.raises(RuntimeError, match="make vllm-env") as caught:
        start_vllm_replicas(tmp_path / "logs", ["0"], env=VllmEnv(tmp_path), model=missing)
    assert "ghost" in str(caught.value)
    assert not (tmp_path / "logs").exists()  # nothing was started
