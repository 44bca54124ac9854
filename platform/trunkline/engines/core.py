"""The engine model: vLLM V1's continuous-batching scheduler over a paged, prefix-cached KV cache.

Pure and synchronous: no I/O, no asyncio, no clock. The caller passes ``now`` to every call and
learns from each :meth:`EngineCore.step` how long the step lasts in engine time, so the same
core runs in wall-clock time behind HTTP and in virtual time inside fleet benchmarks.

One step, as in vLLM V1: running requests first (one decode token each, or the next chunk of a
prefill), preempting the newest running request — freeing its blocks so it recomputes later —
when the KV cache cannot grow; then, if nothing was preempted, waiting requests in arrival order
while there are sequence slots, token budget and KV blocks, each reusing its longest cached
prefix of full blocks. A request whose computed tokens catch up with its tokens samples one
token at the end of the step.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from trunkline.engines.events import EngineCounters, RequestUsage, StepResult, TokenEvent
from trunkline.engines.kv_cache import BlockHash, KVCacheManager, extend_block_hashes
from trunkline.engines.profiles import AcceleratorProfile
from trunkline.engines.tokens import FIRST_ORDINARY_ID, VOCAB_SIZE

__all__ = ["EngineCore"]


@dataclass(slots=True, eq=False)
class _Request:
    req_id: str
    token_ids: list[int]  # prompt, then generated tokens
    num_prompt_tokens: int
    max_tokens: int
    arrival_time: float
    rng: random.Random
    cache_salt: str | None
    block_hashes: list[BlockHash] = field(default_factory=list)
    num_computed_tokens: int = 0
    cached_tokens: int = -1  # set when first scheduled
    num_preemptions: int = 0
    last_token_time: float = 0.0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens


class EngineCore:
    """One simulated vLLM engine: scheduler, KV cache and step-time model."""

    def __init__(
        self, profile: AcceleratorProfile, *, seed: int = 0, enable_prefix_caching: bool = True
    ) -> None:
        self.profile = profile
        self.seed = seed
        self.enable_prefix_caching = enable_prefix_caching
        self.counters = EngineCounters()
        self._kv = KVCacheManager(
            profile.kv_cache_blocks, profile.block_size, enable_caching=enable_prefix_caching
        )
        self._requests: dict[str, _Request] = {}
        self._waiting: deque[_Request] = deque()
        self._running: list[_Request] = []
        self._num_arrivals = 0

    # -- state -------------------------------------------------------------------------------

    @property
    def kv_cache(self) -> KVCacheManager:
        return self._kv

    @property
    def num_requests_running(self) -> int:
        return len(self._running)

    @property
    def num_requests_waiting(self) -> int:
        return len(self._waiting)

    @property
    def kv_cache_usage(self) -> float:
        return self._kv.usage

    @property
    def prefix_cache_queries(self) -> int:
        return self.counters.prefix_cache_queries

    @property
    def prefix_cache_hits(self) -> int:
        return self.counters.prefix_cache_hits

    def has_unfinished_requests(self) -> bool:
        return bool(self._requests)

    def cached_tokens(self, req_id: str) -> int | None:
        """Prompt tokens a live request found in the prefix cache (``None`` before scheduling)."""
        req = self._requests.get(req_id)
        if req is None or req.cached_tokens < 0:
            return None
        return req.cached_tokens

    # -- requests ----------------------------------------------------------------------------

    def add_request(
        self,
        req_id: str,
        prompt_tokens: Sequence[int],
        max_tokens: int,
        now: float,
        *,
        cache_salt: str | None = None,
        seed: int | None = None,
    ) -> None:
        """Queue a request; it is scheduled by the next :meth:`step`."""
        if req_id in self._requests:
            raise ValueError(f"request {req_id!r} already exists")
        if not prompt_tokens:
            raise ValueError("prompt must contain at least one token")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        if len(prompt_tokens) + max_tokens > self.profile.max_model_len:
            raise ValueError(
                f"{len(prompt_tokens)} prompt tokens + {max_tokens} max_tokens exceed "
                f"max_model_len {self.profile.max_model_len}"
            )
        sample_seed = seed if seed is not None else self._num_arrivals
        self._num_arrivals += 1
        req = _Request(
            req_id=req_id,
            token_ids=list(prompt_tokens),
            num_prompt_tokens=len(prompt_tokens),
            max_tokens=max_tokens,
            arrival_time=now,
            rng=random.Random(f"{self.seed}:{sample_seed}"),
            cache_salt=cache_salt,
        )
        extend_block_hashes(req.block_hashes, req.token_ids, self.profile.block_size, cache_salt)
        self._requests[req_id] = req
        self._waiting.append(req)

    def abort(self, req_id: str) -> bool:
        """Drop a live request and free its blocks; ``False`` if it is not live."""
        req = self._requests.pop(req_id, None)
        if req is None:
            return False
        if req in self._running:
            self._running.remove(req)
        else:
            self._waiting.remove(req)
        self._kv.free(req_id)
        self.counters.finished["abort"] += 1
        return True

    # -- stepping ----------------------------------------------------------------------------

    def step(self, now: float) -> StepResult:
        """Schedule and run one step starting at ``now``; idle steps last 0 s."""
        scheduled: list[tuple[_Request, int]] = []
        preempted: list[str] = []
        budget = self._schedule_running(self.profile.max_num_batched_tokens, scheduled, preempted)
        if not preempted:
            self._schedule_waiting(budget, scheduled)
        if not scheduled:
            return StepResult(time=now, duration=0.0, preempted=tuple(preempted))

        prefill_tokens = 0
        decode_seqs = 0
        for req, num_new in scheduled:
            if num_new == 1 and req.num_output_tokens > 0:
                decode_seqs += 1
            else:
                prefill_tokens += num_new
        profile = self.profile
        duration = (
            prefill_tokens * profile.prefill_s_per_token
            + profile.decode_step_base_s
            + profile.decode_s_per_seq * len(scheduled)
        )
        return StepResult(
            time=now,
            duration=duration,
            events=self._execute(scheduled, now + duration),
            num_prefill_tokens=prefill_tokens,
            num_decode_seqs=decode_seqs,
            num_scheduled_seqs=len(scheduled),
            preempted=tuple(preempted),
        )

    def _schedule_running(
        self, budget: int, scheduled: list[tuple[_Request, int]], preempted: list[str]
    ) -> int:
        index = 0
        while index < len(self._running) and budget > 0:
            req = self._running[index]
            num_new = min(req.num_tokens - req.num_computed_tokens, budget)
            if not self._allocate_or_preempt(req, num_new, preempted):
                break
            scheduled.append((req, num_new))
            budget -= num_new
            index += 1
        return budget

    def _allocate_or_preempt(self, req: _Request, num_new: int, preempted: list[str]) -> bool:
        while not self._kv.allocate_slots(
            req.req_id,
            num_new,
            num_computed_tokens=req.num_computed_tokens,
            num_tokens=req.num_tokens,
            block_hashes=req.block_hashes,
        ):
            victim = self._running.pop()  # the newest running request
            self._kv.free(victim.req_id)
            victim.num_computed_tokens = 0
            victim.num_preemptions += 1
            self.counters.preemptions += 1
            self._waiting.appendleft(victim)
            preempted.append(victim.req_id)
            if victim is req:
                return False
        return True

    def _schedule_waiting(self, budget: int, scheduled: list[tuple[_Request, int]]) -> None:
        while self._waiting and budget > 0 and len(self._running) < self.profile.max_num_seqs:
            req = self._waiting[0]
            hits = self._kv.lookup(req.block_hashes, req.num_tokens)
            num_hit = len(hits) * self.profile.block_size
            num_new = min(req.num_tokens - num_hit, budget)
            if not self._kv.allocate_slots(
                req.req_id,
                num_new,
                num_computed_tokens=0,
                num_tokens=req.num_tokens,
                block_hashes=req.block_hashes,
                new_computed_blocks=hits,
            ):
                break
            if self.enable_prefix_caching:
                self.counters.prefix_cache_queries += req.num_tokens
                self.counters.prefix_cache_hits += num_hit
            self._waiting.popleft()
            self._running.append(req)
            req.num_computed_tokens = num_hit
            if req.cached_tokens < 0:
                req.cached_tokens = num_hit
            scheduled.append((req, num_new))
            budget -= num_new

    def _execute(self, scheduled: list[tuple[_Request, int]], end: float) -> tuple[TokenEvent, ...]:
        events: list[TokenEvent] = []
        finished = False
        for req, num_new in scheduled:
            req.num_computed_tokens += num_new
            if req.num_computed_tokens < req.num_tokens:
                continue  # a prefill chunk that does not reach the end of the sequence
            event = self._sample(req, end)
            events.append(event)
            finished = finished or event.finished
        if finished:
            self._running = [req for req in self._running if req.req_id in self._requests]
        return tuple(events)

    def _sample(self, req: _Request, now: float) -> TokenEvent:
        token_id = req.rng.randrange(FIRST_ORDINARY_ID, VOCAB_SIZE)
        req.token_ids.append(token_id)
        extend_block_hashes(req.block_hashes, req.token_ids, self.profile.block_size, None)
        index = req.num_output_tokens - 1
        since = req.arrival_time if index == 0 else req.last_token_time
        req.last_token_time = now
        self.counters.generation_tokens += 1
        if index == 0:
            self.counters.prompt_tokens += req.num_prompt_tokens
        if req.num_output_tokens < req.max_tokens:
            return TokenEvent(req.req_id, token_id, index, now, now - since)
        del self._requests[req.req_id]
        self._kv.free(req.req_id)
        self.counters.finished["length"] += 1
        usage = RequestUsage(
            prompt_tokens=req.num_prompt_tokens,
            completion_tokens=req.num_output_tokens,
            cached_tokens=max(req.cached_tokens, 0),
            e2e_latency=now - req.arrival_time,
            num_preemptions=req.num_preemptions,
        )
        return TokenEvent(req.req_id, token_id, index, now, now - since, "length", usage)
