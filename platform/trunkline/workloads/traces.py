"""Replay of public LLM-serving traces from ``../shared/data`` (read lazily, never copied).

- Azure LLM inference trace 2023 (Azure/AzurePublicDataset, CC-BY-4.0; Patel et al., Splitwise,
  ISCA 2024): ``TIMESTAMP,ContextTokens,GeneratedTokens`` for conversation and code services.
  Content is not published, so every prompt is unique tokens of the given length.
- Mooncake traces (kvcache-ai/Mooncake, FAST'25): ``timestamp`` (ms), ``input_length``,
  ``output_length`` and ``hash_ids``, one id per 512-token block of the prompt, chained (equal
  ids mean an equal prefix). Each id maps to the same 512 tokens in every request (the last,
  partial block to their prefix), so prefix reuse replays exactly at any engine block size.

Both readers stream the file line by line each time ``requests()`` is called.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from trunkline.errors import ConfigurationError
from trunkline.workloads.prompts import Prompt, build_prompt, segment, stable_key
from trunkline.workloads.schemas import WorkloadRequest

__all__ = [
    "MOONCAKE_BLOCK_TOKENS",
    "AzureTrace",
    "MooncakeTrace",
    "default_data_dir",
    "parse_azure_timestamp",
]

MOONCAKE_BLOCK_TOKENS = 512
TRACE_FILES = {
    "azure-conv": "AzureLLMInferenceTrace_conv.csv",
    "azure-code": "AzureLLMInferenceTrace_code.csv",
    "mooncake-conv": "mooncake_conversation_trace.jsonl",
    "mooncake-synthetic": "mooncake_synthetic_trace.jsonl",
}


def default_data_dir() -> Path:
    """``$TRUNKLINE_DATA_DIR``, else the first ``shared/data`` beside the working directory or
    one of its parents (a checkout normally sits next to ``shared/``)."""
    configured = os.environ.get("TRUNKLINE_DATA_DIR")
    if configured:
        return Path(configured)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        candidate = folder / "shared" / "data"
        if (candidate / TRACE_FILES["azure-conv"]).is_file():
            return candidate
    return here.parent / "shared" / "data"


def trace_path(data_dir: Path, name: str) -> Path:
    path = data_dir / TRACE_FILES[name]
    if not path.is_file():
        raise ConfigurationError(
            f"trace file {path} not found; set TRUNKLINE_DATA_DIR or --data-dir to the folder "
            "holding the shared workload traces",
            param="data_dir",
        )
    return path


def parse_azure_timestamp(text: str) -> float:
    """Seconds since midnight of ``2023-11-16 18:15:46.6805900`` (the trace spans one hour)."""
    clock = text.rpartition(" ")[2]
    hours, minutes, seconds = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclass(frozen=True, slots=True)
class _Replay:
    """Knobs shared by trace replays."""

    path: Path
    name: str
    limit: int | None = None
    """Stop after this many requests."""
    duration_s: float = 3600.0
    """Replay only requests arriving in the first ``duration_s`` seconds (after ``speedup``)."""
    speedup: float = 1.0
    """Divide every inter-arrival time: 2.0 replays the same requests at twice the rate."""
    tenant: str = "trace"
    tier: str = "silver"

    @property
    def tenants(self) -> Mapping[str, str]:
        return {self.tenant: self.tier}

    def _keep(self, index: int, arrival: float) -> bool:
        return (self.limit is None or index < self.limit) and arrival < self.duration_s


@dataclass(frozen=True, slots=True)
class AzureTrace(_Replay):
    def requests(self) -> Iterator[WorkloadRequest]:
        with self.path.open(newline="") as handle:
            rows = csv.reader(handle)
            next(rows)  # header
            start: float | None = None
            for index, (stamp, context, generated) in enumerate(rows):
                at = parse_azure_timestamp(stamp)
                start = at if start is None else start
                arrival = (at - start) / self.speedup
                if not self._keep(index, arrival):
                    return
                prompt = Prompt(segment(stable_key(self.name, index), max(int(context), 1)))
                yield WorkloadRequest(
                    f"{self.name}-{index}", arrival, self.tenant, prompt, max(int(generated), 1)
                )


@dataclass(frozen=True, slots=True)
class MooncakeTrace(_Replay):
    def requests(self) -> Iterator[WorkloadRequest]:
        with self.path.open() as handle:
            for index, line in enumerate(handle):
                record = json.loads(line)
                arrival = record["timestamp"] / 1000.0 / self.speedup
                if not self._keep(index, arrival):
                    return
                prompt = build_prompt(
                    mooncake_blocks(record["hash_ids"], int(record["input_length"]))
                )
                max_tokens = max(int(record["output_length"]), 1)
                yield WorkloadRequest(
                    f"{self.name}-{index}", arrival, self.tenant, prompt, max_tokens
                )

    def hash_id_records(self) -> Iterator[tuple[list[int], int]]:
        """``(hash_ids, input_length)`` of each replayed request, for the oracle hit rate."""
        with self.path.open() as handle:
            for index, line in enumerate(handle):
                record = json.loads(line)
                if not self._keep(index, record["timestamp"] / 1000.0 / self.speedup):
                    return
                yield record["hash_ids"], int(record["input_length"])


def mooncake_blocks(hash_ids: list[int], input_length: int) -> Iterator[list[int]]:
    """The token blocks of a Mooncake prompt: 512 tokens per id, the last one cut to length."""
    for position, hash_id in enumerate(hash_ids):
        length = min(MOONCAKE_BLOCK_TOKENS, input_length - position * MOONCAKE_BLOCK_TOKENS)
        if length <= 0:
            return
        yield segment(stable_key("mooncake", hash_id), length)
