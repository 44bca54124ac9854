"""Run many pure-decode steps of an :class:`EngineCore` at once, exactly as one by one.

Between two changes of the batch — an arrival, a finish — a busy engine mostly repeats the same
step: every running request decodes one token. :func:`run_decode` runs those steps in one call
when nothing else could happen in them: every running request is decoding, no waiting request
could be admitted (none waits, or the batch is at ``max_num_seqs`` or the token budget), the
free blocks cover every block the run needs (so nothing is preempted), and no step starts at or
after ``until`` (the caller's next arrival). It computes each step's duration with the same
expression as :meth:`EngineCore.step`, allocates and caches blocks in the same order (step by
step, batch order within a step, flushing KV events at each step's end), and samples the same
tokens, so engine state, timings and events are identical to stepping — the unit tests check it.
"""

from __future__ import annotations

from trunkline.engines.core import EngineCore
from trunkline.engines.events import DecodeRun, TokenEvent
from trunkline.engines.kv_cache import extend_block_hashes
from trunkline.engines.requests import EngineRequest

__all__ = ["run_decode"]

_MIN_STEPS = 2  # a single step is cheaper through EngineCore.step


def run_decode(core: EngineCore, now: float, until: float) -> DecodeRun | None:
    """Run the pure-decode steps that start before ``until``; ``None`` when none can be batched."""
    running = core.running
    profile = core.profile
    num_seqs = len(running)
    if num_seqs == 0 or num_seqs > profile.max_num_batched_tokens:
        return None
    if (
        core.waiting
        and num_seqs < profile.max_num_seqs
        and num_seqs < profile.max_num_batched_tokens
    ):
        return None
    steps = 1 << 62
    context = 0
    for req in running:
        num_tokens = len(req.token_ids)
        if req.num_computed_tokens != num_tokens - 1 or num_tokens == req.num_prompt_tokens:
            return None  # still prefilling
        if req.stop_texts:
            return None  # where its answer ends is known only token by token
        steps = min(steps, req.tokens_left)
        context += num_tokens
    steps = _fit_in_free_blocks(core, steps)
    if steps < _MIN_STEPS:
        return None
    core.take_in(now)  # requests waiting for a free slot were taken in at this step's start

    cost = profile.batch_cost(num_seqs, num_seqs, 0)
    per_context_token = profile.attention_s_per_context_token
    durations: list[float] = []
    ends: list[float] = []
    end = now
    while len(durations) < steps and end < until:
        duration = cost + per_context_token * context
        durations.append(duration)
        end += duration
        ends.append(end)
        context += num_seqs
    if len(durations) < _MIN_STEPS:
        return None
    return DecodeRun(now, durations, num_seqs, _apply(core, len(durations), ends), end)


def _blocks_needed(core: EngineCore, steps: int) -> int:
    block_size = core.profile.block_size
    needed = 0
    for req in core.running:
        # Step i computes token len(token_ids) - 1 + i, holding len(token_ids) + i tokens.
        blocks = -(-(len(req.token_ids) + steps - 1) // block_size)
        needed += max(0, blocks - core.kv.num_blocks_of(req.req_id))
    return needed


def _fit_in_free_blocks(core: EngineCore, steps: int) -> int:
    free = core.kv.num_free_blocks
    if _blocks_needed(core, steps) <= free:
        return steps
    low, high = 0, steps  # low fits, high does not
    while high - low > 1:
        middle = (low + high) // 2
        if _blocks_needed(core, middle) <= free:
            low = middle
        else:
            high = middle
    return low


def _apply(core: EngineCore, steps: int, ends: list[float]) -> tuple[TokenEvent, ...]:
    running = list(core.running)
    starts = [len(req.token_ids) for req in running]
    for req in running:
        req.token_ids += req.next_tokens(steps)
        if core.enable_prefix_caching:
            extend_block_hashes(
                req.block_hashes, req.token_ids, core.profile.block_size, req.cache_salt
            )
    _replay_block_actions(core, running, starts, steps, ends)
    end = ends[-1]
    core.counters.generation_tokens += steps * len(running)
    finished: list[TokenEvent] = []
    for req in running:
        req.num_computed_tokens += steps
        req.last_token_time = end
        reason = req.finish_reason()
        if reason is not None:
            usage = core.finish(req, reason, end)
            latency = end - ends[-2]
            index = req.num_output_tokens - 1
            finished.append(
                TokenEvent(req.req_id, req.token_ids[-1], index, end, latency, reason, usage)
            )
    if finished:
        core.running = [req for req in core.running if req.req_id in core.requests]
    return tuple(finished)


def _replay_block_actions(
    core: EngineCore,
    running: list[EngineRequest],
    starts: list[int],
    steps: int,
    ends: list[float],
) -> None:
    """Allocate and cache blocks in the order per-step scheduling would, flushing events."""
    kv, block_size = core.kv, core.profile.block_size
    caching = core.enable_prefix_caching
    actions: list[tuple[int, int, bool]] = []
    for position, (req, start) in enumerate(zip(running, starts, strict=True)):
        held = kv.num_blocks_of(req.req_id)
        # A new block when start + i passes held * block_size; a block fills when it divides.
        first_alloc = held * block_size + 1 - start
        alloc_steps = set(range(max(first_alloc, 0), steps, block_size))
        cache_steps: set[int] = set()
        if caching:
            first_full = (-start) % block_size
            cache_steps = set(range(first_full, steps, block_size))
        actions.extend((i, position, i in alloc_steps) for i in alloc_steps | cache_steps)
    actions.sort()
    flushed = -1
    for step, position, allocate in actions:
        if step != flushed and flushed >= 0:
            core.flush_kv_events(ends[flushed])
        flushed = step
        req = running[position]
        if allocate:
            kv.append_block(req.req_id)
        if caching:
            kv.cache_blocks(req.req_id, starts[position] + step, req.token_ids, req.block_hashes)
    if flushed >= 0:
        core.flush_kv_events(ends[flushed])
