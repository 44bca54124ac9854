"""Trace replays read the real files in ../shared/data (small slices) and keep their shape."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from trunkline.workloads import MooncakeTrace, default_data_dir, make_workload, mooncake_oracle
from trunkline.workloads.traces import AzureTrace, parse_azure_timestamp, trace_path

DATA = default_data_dir()


@pytest.fixture(autouse=True)
def _needs_the_traces() -> None:
    if not (DATA / "AzureLLMInferenceTrace_conv.csv").is_file():
        pytest.fail(
            f"shared traces not found in {DATA}: put the shared data folder beside"
            " the repo (../shared) or set TRUNKLINE_DATA_DIR"
        )


def head_rows(name: str, count: int) -> list[list[str]]:
    with (DATA / name).open(newline="") as handle:
        rows = csv.reader(handle)
        next(rows)
        return [next(rows) for _ in range(count)]


def test_azure_timestamps_parse_to_seconds() -> None:
    assert parse_azure_timestamp("2023-11-16 18:15:46.6805900") == pytest.approx(65746.68059)


@pytest.mark.parametrize(
    ("name", "csv_name"),
    [
        ("azure-conv", "AzureLLMInferenceTrace_conv.csv"),
        ("azure-code", "AzureLLMInferenceTrace_code.csv"),
    ],
)
def test_azure_replay_keeps_token_counts_and_gaps(name: str, csv_name: str) -> None:
    requests = list(make_workload(f"{name}:limit=40").requests())
    rows = head_rows(csv_name, 40)
    assert [r.prompt.num_tokens for r in requests] == [int(row[1]) for row in rows]
    assert [r.max_tokens for r in requests] == [max(int(row[2]), 1) for row in rows]
    gaps = [parse_azure_timestamp(row[0]) - parse_azure_timestamp(rows[0][0]) for row in rows]
    assert [r.arrival for r in requests] == pytest.approx(gaps)
    hashes = [tuple(r.prompt.block_hashes(16)[:1]) for r in requests if r.prompt.num_tokens >= 16]
    assert len(set(hashes)) == len(hashes)  # no content is published: nothing is shared


def test_speedup_and_duration_compress_and_cut_the_replay() -> None:
    path = trace_path(DATA, "azure-conv")
    normal = list(AzureTrace(path, "azure-conv", limit=50).requests())
    fast = list(AzureTrace(path, "azure-conv", limit=50, speedup=2.0).requests())
    assert [r.arrival for r in fast] == pytest.approx([r.arrival / 2 for r in normal])
    cut = list(AzureTrace(path, "azure-conv", duration_s=10.0).requests())
    assert cut and all(r.arrival < 10.0 for r in cut)
    assert len(cut) < 200


def test_mooncake_blocks_replay_the_traces_prefix_sharing() -> None:
    records = [json.loads(line) for line in (DATA / "mooncake_conversation_trace.jsonl").open()][
        :30
    ]
    requests = list(make_workload("mooncake-conv:limit=30").requests())
    assert [r.prompt.num_tokens for r in requests] == [rec["input_length"] for rec in records]
    assert [r.arrival for r in requests] == [rec["timestamp"] / 1000 for rec in records]
    for (a, rec_a), (b, rec_b) in [
        ((0, records[0]), (1, records[1])),
        ((0, records[0]), (5, records[5])),
    ]:
        shared_ids = 0
        for x, y in zip(rec_a["hash_ids"], rec_b["hash_ids"], strict=False):
            if x != y:
                break
            shared_ids += 1
        hashes_a = requests[a].prompt.block_hashes(16)
        hashes_b = requests[b].prompt.block_hashes(16)
        shared_blocks = next(
            (i for i, (x, y) in enumerate(zip(hashes_a, hashes_b, strict=False)) if x != y),
            min(len(hashes_a), len(hashes_b)),
        )
        assert shared_blocks == min(shared_ids * 32, len(hashes_a), len(hashes_b))


def test_mooncake_oracle_reproduces_the_published_cache_ratios() -> None:
    conversation = MooncakeTrace(trace_path(DATA, "mooncake-conv"), "mooncake-conv")
    synthetic = MooncakeTrace(trace_path(DATA, "mooncake-synthetic"), "mooncake-synthetic")
    oracle = mooncake_oracle(conversation.hash_id_records(), 16)
    assert oracle.block_hit_rate == pytest.approx(0.366, abs=0.001)  # README: 36.6 %
    assert math.isclose(oracle.token_hit_rate, 0.37, abs_tol=0.01)
    assert mooncake_oracle(synthetic.hash_id_records(), 16).block_hit_rate == pytest.approx(
        0.640, abs=0.001
    )


def test_a_missing_trace_file_says_where_it_looked(tmp_path: Path) -> None:
    from trunkline.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="TRUNKLINE_DATA_DIR"):
        make_workload("azure-conv", data_dir=tmp_path)
