"""Shared helpers for the engine simulator tests: tiny profiles, stepping, SSE decoding."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from trunkline.engines import AcceleratorProfile, EngineCore, StepResult, TokenEvent, get_profile

# Every scheduled token costs 1 ms, every step 10 ms, every sequence in it 2 ms.
TINY = AcceleratorProfile(
    name="tiny",
    step_overhead_s=0.01,
    weights_read_s=0.0,
    linear_s_per_token=0.001,
    per_seq_s=0.002,
    prefill_attention_s_per_pair=0.0,
    attention_s_per_context_token=0.0,
    kv_cache_blocks=64,
    block_size=4,
    max_num_seqs=8,
    max_model_len=64,
    max_num_batched_tokens=64,
)


def tiny_profile(**changes: Any) -> AcceleratorProfile:
    """A profile small enough to reason about block by block."""
    return replace(TINY, **changes)


def small_h100(**changes: Any) -> AcceleratorProfile:
    """The h100 preset with a few limits changed (for HTTP tests)."""
    return replace(get_profile("h100"), **changes)


def run_until_idle(core: EngineCore, now: float = 0.0, max_steps: int = 10_000) -> list[StepResult]:
    """Step ``core`` until it has no unfinished request; engine time advances by each step."""
    steps: list[StepResult] = []
    while core.has_unfinished_requests():
        assert len(steps) < max_steps, "engine made no progress"
        step = core.step(now)
        now += step.duration
        steps.append(step)
    return steps


def events_of(steps: list[StepResult], req_id: str) -> list[TokenEvent]:
    return [event for step in steps for event in step.events if event.req_id == req_id]


def serve_one(
    core: EngineCore, req_id: str, prompt: list[int], max_tokens: int = 1, **kwargs: Any
) -> TokenEvent:
    """Run one request alone to completion and return its last event."""
    core.add_request(req_id, prompt, max_tokens, 0.0, **kwargs)
    last = events_of(run_until_idle(core), req_id)[-1]
    assert last.usage is not None
    return last


def cached_tokens_of(core: EngineCore, req_id: str, prompt: list[int], **kwargs: Any) -> int:
    usage = serve_one(core, req_id, prompt, **kwargs).usage
    assert usage is not None
    return usage.cached_tokens


def sse_payloads(text: str) -> list[Any]:
    """Decode an SSE body into its ``data:`` payloads (``"[DONE]"`` kept as a string)."""
    assert text.endswith("\n\n"), "an SSE body ends with a blank line"
    payloads: list[Any] = []
    for event in text.split("\n\n")[:-1]:
        assert event.startswith("data: "), event
        data = event[len("data: ") :]
        payloads.append(data if data == "[DONE]" else json.loads(data))
    return payloads
