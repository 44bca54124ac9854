"""The pure engine model: scheduling, prefix caching, eviction, preemption, determinism."""

from __future__ import annotations

import pytest
from tests.unit.engines.helpers import (
    cached_tokens_of,
    events_of,
    run_until_idle,
    serve_one,
    tiny_profile,
)

from trunkline.engines import EngineCore

BLOCK = 4  # block size of the tiny profile


def prompt(start: int, length: int) -> list[int]:
    return list(range(start, start + length))


@pytest.mark.parametrize(
    ("length", "expected_cached"),
    [
        (3, 0),  # no full block
        (4, 0),  # one full block, but the last token must be recomputed
        (5, 4),
        (8, 4),
        (9, 8),
    ],
)
def test_a_repeated_prompt_hits_only_its_full_blocks(length: int, expected_cached: int) -> None:
    core = EngineCore(tiny_profile())
    assert cached_tokens_of(core, "first", prompt(100, length)) == 0
    assert cached_tokens_of(core, "again", prompt(100, length)) == expected_cached


def test_a_prefix_shared_up_to_mid_block_hits_only_the_blocks_before() -> None:
    core = EngineCore(tiny_profile())
    base = prompt(100, 10)
    cached_tokens_of(core, "a", base)
    # Shares 6 tokens: one full block and half of the next.
    assert cached_tokens_of(core, "b", base[:6] + prompt(900, 6)) == BLOCK


def test_prefix_cache_counters_count_queried_and_hit_tokens() -> None:
    core = EngineCore(tiny_profile())
    cached_tokens_of(core, "a", prompt(100, 9))
    cached_tokens_of(core, "b", prompt(100, 9))
    assert core.prefix_cache_queries == 18
    assert core.prefix_cache_hits == 8


@pytest.mark.parametrize(
    ("first_salt", "second_salt", "shares_cache"),
    [
        (None, None, True),
        ("tenant-a", "tenant-a", True),
        ("tenant-a", "tenant-b", False),
        (None, "tenant-a", False),
    ],
)
def test_cache_salt_separates_prefix_caches(
    first_salt: str | None, second_salt: str | None, shares_cache: bool
) -> None:
    core = EngineCore(tiny_profile())
    cached_tokens_of(core, "a", prompt(100, 9), cache_salt=first_salt)
    cached = cached_tokens_of(core, "b", prompt(100, 9), cache_salt=second_salt)
    assert cached == (8 if shares_cache else 0)


PROMPTS = {"A": prompt(100, 9), "B": prompt(200, 9), "C": prompt(300, 9)}


@pytest.mark.parametrize(
    ("history", "probe", "expected_cached"),
    [
        ("ABC", "A", 0),  # A is the least recently used prefix: C evicted it
        ("ABC", "B", 8),
        ("ABAC", "A", 8),  # using A again made B the least recently used
        ("ABAC", "B", 0),
    ],
)
def test_eviction_reuses_the_least_recently_used_free_blocks(
    history: str, probe: str, expected_cached: int
) -> None:
    # 6 blocks hold exactly two finished 9-token requests (3 blocks each).
    core = EngineCore(tiny_profile(kv_cache_blocks=6, max_model_len=24))
    for index, name in enumerate(history):
        cached_tokens_of(core, f"{name}{index}", PROMPTS[name])
    assert cached_tokens_of(core, "probe", PROMPTS[probe]) == expected_cached


def test_without_prefix_caching_nothing_is_reused() -> None:
    core = EngineCore(tiny_profile(), enable_prefix_caching=False)
    cached_tokens_of(core, "a", prompt(100, 9))
    assert cached_tokens_of(core, "b", prompt(100, 9)) == 0
    assert core.prefix_cache_queries == 0


def test_the_newest_request_is_preempted_and_recomputed_when_kv_runs_out() -> None:
    profile = tiny_profile(kv_cache_blocks=4, max_model_len=16)
    core = EngineCore(profile)
    core.add_request("A", prompt(100, 4), 10, 0.0, seed=1)
    core.add_request("B", prompt(200, 4), 10, 0.0, seed=2)
    steps = run_until_idle(core)

    assert any(step.preempted == ("B",) for step in steps)
    assert not any("A" in step.preempted for step in steps)
    a_events, b_events = events_of(steps, "A"), events_of(steps, "B")
    assert [event.index for event in a_events] == list(range(10))
    assert [event.index for event in b_events] == list(range(10))
    assert a_events[-1].usage is not None
    assert a_events[-1].usage.num_preemptions == 0
    assert b_events[-1].usage is not None
    assert b_events[-1].usage.num_preemptions >= 1
    assert core.counters.preemptions >= 1

    alone = EngineCore(profile)
    alone.add_request("B", prompt(200, 4), 10, 0.0, seed=2)
    expected = [event.token_id for event in events_of(run_until_idle(alone), "B")]
    assert [event.token_id for event in b_events] == expected


def test_chunked_prefill_splits_a_long_prompt_by_the_token_budget() -> None:
    core = EngineCore(tiny_profile(max_num_batched_tokens=16))
    core.add_request("long", prompt(100, 40), 2, 0.0)
    steps = run_until_idle(core)
    assert [step.num_prefill_tokens for step in steps] == [16, 16, 8, 0]
    assert [len(step.events) for step in steps] == [0, 0, 1, 1]


def test_chunked_prefill_shares_the_budget_with_running_decodes() -> None:
    profile = tiny_profile(max_num_batched_tokens=16)
    core = EngineCore(profile)
    core.add_request("chat", prompt(100, 4), 30, 0.0)
    now = core.step(0.0).duration
    core.add_request("long", prompt(500, 40), 1, now)
    steps = run_until_idle(core, now)

    assert all(step.num_scheduled_tokens <= 16 for step in steps)
    assert [step.num_prefill_tokens for step in steps[:3]] == [15, 15, 10]
    assert all(step.num_decode_seqs == 1 for step in steps)
    assert events_of(steps, "long")[0].time == pytest.approx(
        now + sum(s.duration for s in steps[:3])
    )
    # step overhead + scheduled tokens x token cost + sequences x per-sequence cost
    assert steps[0].duration == pytest.approx(0.01 + 16 * 0.001 + 2 * 0.002)


def test_time_to_first_token_includes_queueing_behind_the_batch_limit() -> None:
    core = EngineCore(tiny_profile(max_num_seqs=1))
    core.add_request("first", prompt(100, 4), 3, 0.0)
    core.add_request("second", prompt(200, 4), 3, 0.0)
    steps = run_until_idle(core)
    first, second = events_of(steps, "first"), events_of(steps, "second")
    assert second[0].time > first[-1].time
    assert second[0].latency == pytest.approx(second[0].time)


def test_max_num_seqs_bounds_the_running_batch() -> None:
    core = EngineCore(tiny_profile(max_num_seqs=2))
    for name in "xyz":
        core.add_request(name, prompt(ord(name) * 10, 4), 5, 0.0)
    core.step(0.0)
    assert (core.num_requests_running, core.num_requests_waiting) == (2, 1)


def test_kv_usage_follows_the_blocks_in_use() -> None:
    core = EngineCore(tiny_profile())
    assert core.kv_cache_usage == 0.0
    core.add_request("a", prompt(100, 9), 5, 0.0)
    core.step(0.0)
    assert core.kv_cache_usage == pytest.approx(3 / 64)
    run_until_idle(core)
    assert core.kv_cache_usage == 0.0  # cached blocks stay, but are free to evict


def test_abort_frees_the_request_and_stops_its_tokens() -> None:
    core = EngineCore(tiny_profile())
    core.add_request("gone", prompt(100, 8), 20, 0.0)
    core.add_request("queued", prompt(200, 8), 20, 0.0)
    first = core.step(0.0)
    assert core.abort("gone") is True
    assert core.abort("gone") is False
    rest = run_until_idle(core, first.duration)
    assert events_of(rest, "gone") == []
    assert len(events_of([first, *rest], "queued")) == 20
    assert core.counters.finished["abort"] == 1
    assert core.counters.finished["length"] == 1
    assert core.kv_cache_usage == 0.0


def test_abort_removes_a_waiting_request() -> None:
    core = EngineCore(tiny_profile())
    core.add_request("waiting", prompt(100, 8), 4, 0.0)
    core.abort("waiting")
    assert core.num_requests_waiting == 0
    assert not core.has_unfinished_requests()


def workload(core: EngineCore) -> list[tuple[str, int, int, float]]:
    core.add_request("a", prompt(100, 12), 6, 0.0)
    core.add_request("b", prompt(100, 8) + prompt(700, 5), 6, 0.0)
    steps = run_until_idle(core)
    core.add_request("c", prompt(100, 12), 6, steps[-1].time + steps[-1].duration)
    steps += run_until_idle(core, steps[-1].time + steps[-1].duration)
    return [(e.req_id, e.token_id, e.index, e.time) for s in steps for e in s.events]


def test_the_same_seed_gives_the_same_run_and_another_seed_other_tokens() -> None:
    first = workload(EngineCore(tiny_profile(), seed=7))
    assert workload(EngineCore(tiny_profile(), seed=7)) == first
    other = workload(EngineCore(tiny_profile(), seed=8))
    assert [token for _, token, _, _ in other] != [token for _, token, _, _ in first]
    assert [(r, i, t) for r, _, i, t in other] == [(r, i, t) for r, _, i, t in first]


def test_a_request_seed_fixes_its_tokens_whatever_ran_before() -> None:
    core = EngineCore(tiny_profile())
    first = serve_one(core, "a", prompt(100, 5), 4, seed=42)
    serve_one(core, "noise", prompt(300, 5), 4)
    again = serve_one(core, "b", prompt(100, 5), 4, seed=42)
    assert again.token_id == first.token_id


@pytest.mark.parametrize(
    ("prompt_tokens", "max_tokens", "message"),
    [
        ([], 4, "at least one token"),
        (prompt(100, 60), 5, "exceed max_model_len"),
        (prompt(100, 4), 0, "at least 1"),
    ],
)
def test_requests_that_cannot_run_are_refused(
    prompt_tokens: list[int], max_tokens: int, message: str
) -> None:
    core = EngineCore(tiny_profile())
    with pytest.raises(ValueError, match=message):
        core.add_request("r", prompt_tokens, max_tokens, 0.0)
    assert not core.has_unfinished_requests()


def test_request_ids_must_be_unique_among_live_requests() -> None:
    core = EngineCore(tiny_profile())
    core.add_request("r", prompt(100, 4), 4, 0.0)
    with pytest.raises(ValueError, match="already exists"):
        core.add_request("r", prompt(100, 4), 4, 0.0)


def test_a_request_waiting_for_blocks_is_queried_again_at_every_attempt_as_in_vllm() -> None:
    # 8 blocks of 4 tokens: A (20 tokens, growing to 28) leaves too few for B's 16-token prompt.
    core = EngineCore(tiny_profile(kv_cache_blocks=8, max_model_len=32))
    core.add_request("A", prompt(100, 20), 8, 0.0)
    core.step(0.0)
    core.add_request("B", prompt(500, 16), 2, 0.0)
    steps = run_until_idle(core, 1.0)
    first_b = next(i for i, step in enumerate(steps) if events_of([step], "B"))
    assert first_b > 1  # B waited while A decoded
    # Every step before B got its blocks looked B up once more (vLLM counts each lookup).
    assert core.prefix_cache_queries == 20 + 16 * (first_b + 1)


@pytest.mark.parametrize(("salt", "expected_cached"), [("tenant-a", 8), ("tenant-b", 0)])
def test_a_salted_first_block_filled_by_generated_tokens_keeps_its_salt(
    salt: str, expected_cached: int
) -> None:
    core = EngineCore(tiny_profile())
    first = prompt(100, 3)  # shorter than a block: the block is completed by generated tokens
    core.add_request("a", first, 6, 0.0, cache_salt="tenant-a")
    generated = [event.token_id for event in events_of(run_until_idle(core), "a")]
    assert cached_tokens_of(core, "b", first + generated, cache_salt=salt) == expected_cached


def test_a_remote_prefill_computes_only_the_last_prompt_token_but_holds_the_whole_prompt() -> None:
    # The TINY profile costs 1 ms a scheduled token: a 40-token prompt prefilled here is a
    # 40-token step, one whose KV came from a prefill engine a 1-token step.
    local, remote = EngineCore(tiny_profile()), EngineCore(tiny_profile())
    local.add_request("r", prompt(100, 40), 3, 0.0)
    remote.add_request("r", prompt(100, 40), 3, 0.0, remote_prefill=True)
    local_first, remote_first = local.step(0.0), remote.step(0.0)
    assert local_first.num_prefill_tokens == 40
    assert remote_first.num_prefill_tokens == 1
    assert remote_first.duration < local_first.duration
    assert [e.index for e in remote_first.events] == [0]  # its first token comes at once
    # Its KV occupies the cache as the prompt's own would: every block of the 41 tokens.
    assert remote.kv_cache_usage == local.kv_cache_usage > 0
    steps = run_until_idle(remote, remote_first.duration)
    usage = events_of([remote_first, *steps], "r")[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (40, 3)


def test_a_remote_prefill_preempted_is_prefilled_again_here() -> None:
    # Two requests that cannot both grow in a 12-block cache: the newer is preempted, loses
    # its KV, and recomputes its whole prompt when it is scheduled again.
    core = EngineCore(tiny_profile(kv_cache_blocks=12, max_model_len=48))
    core.add_request("old", prompt(0, 20), 20, 0.0)
    core.add_request("new", prompt(500, 20), 20, 0.0, remote_prefill=True)
    steps = run_until_idle(core)
    assert core.counters.preemptions >= 1
    recomputed = [step.num_prefill_tokens for step in steps[1:] if step.num_prefill_tokens > 1]
    assert recomputed, "the preempted remote prefill was not prefilled again"
