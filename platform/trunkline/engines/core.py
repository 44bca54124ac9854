"""The engine model: vLLM V1's continuous-batching scheduler over a paged, prefix-cached KV cache.

Pure and synchronous: no I/O, no clock. The caller passes ``now`` to every call and learns from
each :meth:`EngineCore.step` how long the step lasts in engine time, so the same core runs in
wall-clock time behind HTTP and in virtual time inside fleet benchmarks.

One step, as in vLLM V1 (``vllm/v1/core/sched/scheduler.py``) with chunked prefill on: running
requests first, in order, each taking the tokens it still has to compute (one for a decode, the
next chunk of a prefill) out of ``max_num_batched_tokens``; when the KV cache cannot grow, the
newest running request is preempted (blocks freed, recomputed later) and put back at the head
of the queue. Then, if nothing was preempted, waiting requests in order while there are
sequence slots (``max_num_seqs``), token budget and KV blocks, each first looking up its longest
cached prefix of full blocks (counted in the prefix-cache counters at every attempt, as vLLM
does). A request whose computed tokens catch up with its tokens samples one token at the end of
the step. KV-cache events go to ``kv_event_sink`` once per step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from trunkline.engines.events import (
    EngineCounters,
    FinishReason,
    KVEventSink,
    RequestUsage,
    StepResult,
    TokenEvent,
)
from trunkline.engines.kv_cache import BlockHash, extend_block_hashes
from trunkline.engines.kv_manager import KVCacheManager
from trunkline.engines.profiles import AcceleratorProfile
from trunkline.engines.requests import EngineRequest, check_request

__all__ = ["EngineCore"]


class EngineCore:
    """One simulated vLLM engine: scheduler, KV cache and step-time model."""

    def __init__(
        self,
        profile: AcceleratorProfile,
        *,
        seed: int = 0,
        enable_prefix_caching: bool = True,
        kv_event_sink: KVEventSink | None = None,
    ) -> None:
        self.profile = profile
        self.seed = seed
        self.enable_prefix_caching = enable_prefix_caching
        self.counters = EngineCounters()
        self.kv_event_sink = kv_event_sink
        self.kv = KVCacheManager(
            profile.kv_cache_blocks,
            profile.block_size,
            enable_caching=enable_prefix_caching,
            enable_events=kv_event_sink is not None,
        )
        self.requests: dict[str, EngineRequest] = {}
        self.waiting: deque[EngineRequest] = deque()
        self.running: list[EngineRequest] = []
        self._num_arrivals = 0
        self._arrived: list[EngineRequest] = []
        """Added since the last step: that step is when vLLM's scheduler takes them in."""

    @property
    def num_requests_running(self) -> int:
        return len(self.running)

    @property
    def num_requests_waiting(self) -> int:
        return len(self.waiting)

    @property
    def kv_cache_usage(self) -> float:
        return self.kv.usage

    @property
    def prefix_cache_queries(self) -> int:
        return self.counters.prefix_cache_queries

    @property
    def prefix_cache_hits(self) -> int:
        return self.counters.prefix_cache_hits

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def add_request(
        self,
        req_id: str,
        prompt_tokens: Sequence[int],
        max_tokens: int,
        now: float,
        *,
        cache_salt: str | None = None,
        seed: int | None = None,
        output_tokens: Sequence[int] | None = None,
        block_hashes: Sequence[BlockHash] | None = None,
        ends_at_max: bool = False,
        remote_prefill: bool = False,
        stop_texts: Sequence[str] = (),
        min_tokens: int = 0,
    ) -> None:
        """Queue a request; it is scheduled by the next :meth:`step`.

        ``output_tokens`` makes the engine answer exactly those tokens and stop (a scripted
        model, so a workload can put the answer in the next turn's prompt). ``block_hashes``
        saves hashing a prompt whose hashes the caller already holds; they must be what
        :func:`~trunkline.engines.kv_cache.prefix_block_hashes` gives for this block size.
        ``ends_at_max``: the answer ends there with an end-of-sequence token (finish reason
        ``stop``, not ``length``). ``remote_prefill``: another engine prefilled the prompt and
        its KV is here (see :attr:`EngineRequest.remote_prefill`). ``stop_texts``: the answer
        ends (finish reason ``stop``) with the token that completes one of them, past its
        first ``min_tokens``.
        """
        if req_id in self.requests:
            raise ValueError(f"request {req_id!r} already exists")
        self.check_request(len(prompt_tokens), max_tokens)
        if output_tokens is not None and not output_tokens:
            raise ValueError("output_tokens, when given, must hold at least one token")
        sample_seed = seed if seed is not None else self._num_arrivals
        self._num_arrivals += 1
        req = EngineRequest.new(
            req_id,
            prompt_tokens,
            max_tokens,
            now,
            sampling_key=f"{self.seed}:{sample_seed}",
            cache_salt=cache_salt,
            output_tokens=output_tokens,
            ends_at_max=ends_at_max,
            remote_prefill=remote_prefill,
            stop_texts=stop_texts,
            min_tokens=min_tokens,
        )
        if self.enable_prefix_caching:
            if block_hashes is not None:
                req.block_hashes.extend(
                    block_hashes[: len(prompt_tokens) // self.profile.block_size]
                )
            else:
                extend_block_hashes(
                    req.block_hashes, req.token_ids, self.profile.block_size, cache_salt
                )
        self.requests[req_id] = req
        self.waiting.append(req)
        self._arrived.append(req)

    def check_request(self, num_prompt_tokens: int, max_tokens: int) -> None:
        """Raise ``ValueError`` for a request vLLM would refuse (its HTTP 400)."""
        check_request(num_prompt_tokens, max_tokens, self.profile.max_model_len)

    def abort(self, req_id: str) -> bool:
        """Drop a live request and free its blocks; ``False`` if it is not live."""
        req = self.requests.pop(req_id, None)
        if req is None:
            return False
        if req in self.running:
            self.running.remove(req)
        else:
            self.waiting.remove(req)
        self.kv.free(req_id)
        self.counters.finished["abort"] += 1
        return True

    def take_in(self, now: float) -> None:
        """The scheduler takes the requests added since the last step in at ``now``, the start
        of the next step (vLLM's engine core adds new requests between steps): their queue
        time starts here, after the step running when they came (which their clients wait for).
        Every step, batched decode runs included, starts with this."""
        if self._arrived:
            for req in self._arrived:
                req.queued_time = now
            self._arrived.clear()

    def step(self, now: float) -> StepResult:
        """Schedule and run one step starting at ``now``; idle steps last 0 s."""
        scheduled: list[tuple[EngineRequest, int]] = []
        preempted: list[str] = []
        self.take_in(now)
        budget = self._schedule_running(self.profile.max_num_batched_tokens, scheduled, preempted)
        if not preempted:
            self._schedule_waiting(budget, scheduled, now)
        if not scheduled:
            self.flush_kv_events(now)
            return StepResult(time=now, duration=0.0, preempted=tuple(preempted))

        num_tokens = prefill_tokens = decode_seqs = pairs = context = 0
        for req, num_new in scheduled:
            num_tokens += num_new
            if num_new == 1 and req.num_output_tokens > 0:
                decode_seqs += 1
                context += len(req.token_ids)
            else:
                prefill_tokens += num_new
                pairs += num_new * req.num_computed_tokens + num_new * (num_new + 1) // 2
        duration = self.profile.step_time(num_tokens, len(scheduled), pairs, context)
        end = now + duration
        events = self._execute(scheduled, end)
        self.flush_kv_events(end)
        return StepResult(
            time=now,
            duration=duration,
            events=events,
            num_prefill_tokens=prefill_tokens,
            num_decode_seqs=decode_seqs,
            num_scheduled_seqs=len(scheduled),
            preempted=tuple(preempted),
        )

    def flush_kv_events(self, now: float) -> None:
        """Hand the KV-cache events gathered since the last flush to the sink."""
        if self.kv_event_sink is not None:
            events = self.kv.pool.take_events()
            if events:
                self.kv_event_sink(now, events)

    def _schedule_running(
        self, budget: int, scheduled: list[tuple[EngineRequest, int]], preempted: list[str]
    ) -> int:
        index = 0
        while index < len(self.running) and budget > 0:
            req = self.running[index]
            num_new = min(len(req.token_ids) - req.num_computed_tokens, budget)
            if not self._allocate_or_preempt(req, num_new, preempted):
                break
            scheduled.append((req, num_new))
            budget -= num_new
            index += 1
        return budget

    def _allocate_or_preempt(self, req: EngineRequest, num_new: int, preempted: list[str]) -> bool:
        while not self.kv.allocate_slots(
            req.req_id,
            num_new,
            num_computed_tokens=req.num_computed_tokens,
            token_ids=req.token_ids,
            block_hashes=req.block_hashes,
        ):
            victim = self.running.pop()  # the newest running request
            self.kv.free(victim.req_id)
            victim.num_computed_tokens = 0
            victim.num_preemptions += 1
            self.counters.preemptions += 1
            self.waiting.appendleft(victim)
            preempted.append(victim.req_id)
            if victim is req:
                return False
        return True

    def _schedule_waiting(
        self, budget: int, scheduled: list[tuple[EngineRequest, int]], now: float
    ) -> None:
        block_size, counters, kv = self.profile.block_size, self.counters, self.kv
        while self.waiting and budget > 0 and len(self.running) < self.profile.max_num_seqs:
            req = self.waiting[0]
            num_tokens = len(req.token_ids)
            hits = kv.lookup(req.block_hashes, num_tokens)
            num_hit = len(hits) * block_size
            if self.enable_prefix_caching:
                counters.prefix_cache_queries += num_tokens
                counters.prefix_cache_hits += num_hit
            remote = req.remote_prefill and req.num_preemptions == 0
            # A remote prefill's KV lands in blocks allocated now for the whole prompt; only
            # its last token is computed here.
            num_new = 1 if remote else min(num_tokens - num_hit, budget)
            if not kv.allocate_slots(
                req.req_id,
                num_tokens - num_hit if remote else num_new,
                num_computed_tokens=0,
                token_ids=req.token_ids,
                block_hashes=req.block_hashes,
                new_computed_blocks=hits,
            ):
                break
            self.waiting.popleft()
            self.running.append(req)
            req.num_computed_tokens = num_tokens - 1 if remote else num_hit
            if req.cached_tokens < 0:
                req.cached_tokens = num_hit
                req.scheduled_time = now
            scheduled.append((req, num_new))
            budget -= num_new

    def _execute(
        self, scheduled: list[tuple[EngineRequest, int]], end: float
    ) -> tuple[TokenEvent, ...]:
        events: list[TokenEvent] = []
        finished = False
        for req, num_new in scheduled:
            req.num_computed_tokens += num_new
            if req.num_computed_tokens < len(req.token_ids):
                continue  # a prefill chunk that does not reach the end of the sequence
            event = self._sample(req, end)
            events.append(event)
            finished = finished or event.finish_reason is not None
        if finished:
            self.running = [req for req in self.running if req.req_id in self.requests]
        return tuple(events)

    def _sample(self, req: EngineRequest, now: float) -> TokenEvent:
        token_id = req.next_tokens(1)[0]
        req.token_ids.append(token_id)
        if self.enable_prefix_caching:
            extend_block_hashes(
                req.block_hashes, req.token_ids, self.profile.block_size, req.cache_salt
            )
        index = req.num_output_tokens - 1
        if index == 0:
            since = req.arrival_time
            req.first_token_time = now
            self.counters.prompt_tokens += req.num_prompt_tokens
        else:
            since = req.last_token_time
        req.last_token_time = now
        self.counters.generation_tokens += 1
        reason = req.finish_reason()
        usage = None if reason is None else self.finish(req, reason, now)
        if index:
            return TokenEvent(req.req_id, token_id, index, now, now - since, reason, usage)
        queued = req.scheduled_time - req.queued_time
        prefill = now - req.scheduled_time
        return TokenEvent(req.req_id, token_id, 0, now, now - since, reason, usage, queued, prefill)

    def finish(self, req: EngineRequest, reason: FinishReason, now: float) -> RequestUsage:
        """Retire a request that generated its last token at ``now``."""
        del self.requests[req.req_id]
        self.kv.free(req.req_id)
        self.counters.finished[reason] += 1
        return req.usage(now)
