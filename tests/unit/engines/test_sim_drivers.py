"""Both drivers step the same core: the virtual-time driver gives exactly the wall-clock
driver's token events, and batching decode steps changes nothing but the speed."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from tests.unit.engines.helpers import tiny_profile

from trunkline.engines import (
    AcceleratorProfile,
    AsyncEngine,
    DecodeRun,
    EngineCore,
    KVCacheEvent,
    StepResult,
    TokenEvent,
    VirtualEngine,
)


def prompt(start: int, length: int) -> list[int]:
    return list(range(start, start + length))


REQUESTS = [  # (prompt, max_tokens): a shared prefix, a long prompt, short and long answers
    (prompt(100, 12), 9),
    (prompt(100, 8) + prompt(700, 30), 5),
    (prompt(300, 3), 14),
    (prompt(100, 12), 7),
]


async def test_virtual_time_gives_the_wall_clock_drivers_token_events() -> None:
    profile = tiny_profile(max_num_batched_tokens=16)
    wall_steps: list[StepResult] = []
    wall = AsyncEngine(EngineCore(profile, seed=3), time_scale=0, on_step=wall_steps.append)
    wall.pause()
    streams = [wall.submit(tokens, max_tokens, seed=0) for tokens, max_tokens in REQUESTS[:3]]
    for _ in range(4):  # the fourth request arrives while the engine is busy
        await wall.step_once()
    late_arrival = wall.now()
    streams.append(wall.submit(*REQUESTS[3], seed=9))
    wall.resume()
    for stream in streams:
        assert [event async for event in stream][-1].usage is not None
    await wall.aclose()

    virtual_steps: list[StepResult] = []
    virtual = VirtualEngine(
        EngineCore(profile, seed=3), on_step=virtual_steps.append, batch_decodes=False
    )
    for index, (tokens, max_tokens) in enumerate(REQUESTS[:3]):
        virtual.submit(f"req-{index}", tokens, max_tokens, 0.0, seed=0)
    virtual.advance_to(late_arrival)
    virtual.submit("req-3", *REQUESTS[3], late_arrival, seed=9)
    virtual.drain()

    assert [event_key(e) for e in events_of(virtual_steps)] == [
        event_key(e) for e in events_of(wall_steps)
    ]
    assert events_of(virtual_steps)[-1].usage is not None


def events_of(steps: Sequence[StepResult]) -> list[TokenEvent]:
    return [event for step in steps for event in step.events]


def event_key(event: TokenEvent) -> tuple[object, ...]:
    return (event.req_id, event.token_id, event.index, event.time, event.latency, event.usage)


@dataclass
class Trace:
    finished: list[TokenEvent]
    itl: list[tuple[float, int]]
    kv_events: list[tuple[float, list[KVCacheEvent]]]
    clock: float
    busy: float
    batched_steps: int
    preemptions: int


def drive(profile: AcceleratorProfile, *, batch: bool, arrivals: int = 10) -> Trace:
    finished: list[TokenEvent] = []
    itl: list[tuple[float, int]] = []
    kv_events: list[tuple[float, list[KVCacheEvent]]] = []
    batched_steps = 0

    def on_step(step: StepResult) -> None:
        itl.extend((round(e.latency, 12), 1) for e in step.events if e.index)
        finished.extend(e for e in step.events if e.usage is not None)

    def on_run(run: DecodeRun) -> None:
        nonlocal batched_steps
        batched_steps += run.num_steps
        itl.extend((round(d, 12), 1) for d in run.durations for _ in range(run.num_seqs))
        finished.extend(run.finished)

    core = EngineCore(profile, seed=5, kv_event_sink=lambda t, e: kv_events.append((t, list(e))))
    engine = VirtualEngine(core, on_step=on_step, on_decode_run=on_run, batch_decodes=batch)
    for index in range(arrivals):
        at = index * 0.37
        engine.advance_to(at)
        shared = prompt(100, 8 * (index % 3))
        engine.submit(
            f"r{index}",
            shared + prompt(1000 * index, 3 + 5 * (index % 4)),
            20 + 7 * (index % 5),
            at,
        )
    engine.drain()
    return Trace(
        finished,
        sorted(itl),
        kv_events,
        engine.clock,
        engine.busy_time,
        batched_steps,
        core.counters.preemptions,
    )


@pytest.mark.parametrize(
    "changes",
    [
        {},  # plenty of room
        {"max_num_seqs": 2},  # waiting requests behind a full batch
        {"kv_cache_blocks": 20, "max_model_len": 80},  # preemptions
        {"max_num_batched_tokens": 3},  # the budget cuts the batch
    ],
)
def test_batched_decode_steps_change_nothing_but_speed(changes: dict[str, int]) -> None:
    profile = tiny_profile(attention_s_per_context_token=1e-5, **changes)
    exact = drive(profile, batch=False)
    batched = drive(profile, batch=True)
    assert batched.batched_steps > 0
    assert batched.preemptions == exact.preemptions
    assert exact.preemptions > 0 or "kv_cache_blocks" not in changes
    assert [event_key(e) for e in batched.finished] == [event_key(e) for e in exact.finished]
    assert batched.itl == exact.itl
    assert batched.kv_events == exact.kv_events
    assert batched.clock == exact.clock
    assert batched.busy == pytest.approx(exact.busy)


def test_batching_really_batches_and_preemption_really_happens() -> None:
    roomy = tiny_profile()
    runs: list[DecodeRun] = []
    engine = VirtualEngine(EngineCore(roomy), on_decode_run=runs.append)
    engine.submit("long", prompt(100, 5), 40, 0.0)
    engine.drain()
    assert sum(run.num_steps for run in runs) >= 30

    tight = tiny_profile(kv_cache_blocks=20, max_model_len=80)
    core = EngineCore(tight)
    engine = VirtualEngine(core)
    for index in range(10):
        engine.submit(f"r{index}", prompt(1000 * index, 10), 40, 0.0)
    engine.drain()
    assert core.counters.preemptions > 0


def test_an_idle_engine_starts_at_the_arrival_and_a_busy_one_after_its_step() -> None:
    engine = VirtualEngine(EngineCore(tiny_profile()), batch_decodes=False)
    engine.submit("a", prompt(100, 4), 1, 5.0)
    assert engine.clock == 5.0
    engine.advance_to(5.001)  # the first step started at 5.0 and lasts longer than 1 ms
    busy_until = engine.clock
    assert busy_until > 5.001
    engine.submit("b", prompt(200, 4), 1, 5.001)
    assert engine.clock == busy_until
    steps = list(itertools.takewhile(lambda _: engine.core.has_unfinished_requests(), range(5)))
    engine.drain()
    assert steps and not engine.core.has_unfinished_requests()


def test_queue_time_starts_when_the_scheduler_takes_the_request_in_as_in_vllm() -> None:
    # vLLM's engine core adds new requests between steps: a request arriving mid-step waits for
    # that step in its TTFT, but its queue time (and so its engine-side TTFT) starts after it.
    firsts: dict[str, TokenEvent] = {}
    usages = {}

    def seen(step: StepResult) -> None:
        for event in step.events:
            if event.first:
                firsts[event.req_id] = event
            if event.usage is not None:
                usages[event.req_id] = event.usage

    engine = VirtualEngine(EngineCore(tiny_profile()), on_step=seen, batch_decodes=False)
    engine.submit("a", prompt(100, 20), 2, 0.0)
    engine.advance_to(0.001)  # a's prefill step runs from 0.0 to 0.032
    first_step_end = engine.clock
    engine.submit("b", prompt(200, 4), 2, 0.001)
    engine.drain()

    b = firsts["b"]
    assert b.queue_s == 0.0  # scheduled by the step it was taken in by
    assert usages["b"].engine_ttft == pytest.approx(b.prefill_s)
    assert usages["b"].ttft == pytest.approx(first_step_end - 0.001 + b.prefill_s)
    assert usages["a"].engine_ttft == pytest.approx(usages["a"].ttft)  # it found the engine idle


@pytest.mark.parametrize("batch", [False, True])
def test_a_request_behind_a_full_batch_is_queued_from_the_step_after_it_came(batch: bool) -> None:
    # Two requests fill the batch; a third arrives mid-run and waits for a free slot. Its queue
    # time starts at the first step after it came, whether decode steps run one by one or in
    # batched runs.
    usages = {}

    def seen(step: StepResult) -> None:
        usages.update({e.req_id: e.usage for e in step.events if e.usage is not None})

    def seen_run(run: DecodeRun) -> None:
        usages.update({e.req_id: e.usage for e in run.finished if e.usage is not None})

    engine = VirtualEngine(
        EngineCore(tiny_profile(max_num_seqs=2)),
        on_step=seen,
        on_decode_run=seen_run,
        batch_decodes=batch,
    )
    for index in range(2):
        engine.submit(f"r{index}", prompt(100 * (index + 1), 4), 40, 0.0)
    engine.advance_to(0.2)
    taken_in = engine.clock  # the end of the step running at 0.2: the next one starts here
    engine.submit("late", prompt(900, 4), 2, 0.2)
    engine.drain()

    late = usages["late"]
    assert late is not None
    assert late.ttft == pytest.approx(taken_in - 0.2 + late.engine_ttft)
    assert late.engine_ttft > 0.2  # it waited for a slot: that is queue time, as in vLLM
