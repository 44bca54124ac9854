"""Drive an :class:`EngineCore` in virtual time: discrete events, no clock, no asyncio.

The engine keeps its own clock — the end of its last step. :meth:`VirtualEngine.advance_to`
runs every step that starts before a given time (so a request arriving then joins the next
step, as it would on a running engine), :meth:`VirtualEngine.submit` queues a request at its
arrival time (an idle engine starts its next step then), and :meth:`VirtualEngine.drain` runs
to the end. A profile's ``frontend_latency_s`` delays the moment the engine core sees a request
(its latencies still count from the arrival), as vLLM's API server does. Step by step it
produces exactly what the wall-clock driver (:class:`~trunkline.engines.runner.AsyncEngine`)
produces for the same arrivals; with
``batch_decodes`` on it hands runs of identical decode steps to
:func:`~trunkline.engines.decode_runs.run_decode`, which changes nothing but the speed.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

from trunkline.engines.core import EngineCore
from trunkline.engines.decode_runs import run_decode
from trunkline.engines.events import DecodeRun, StepResult
from trunkline.engines.kv_cache import BlockHash

__all__ = ["VirtualEngine"]


class VirtualEngine:
    """One engine in virtual time; observers see every step and every batched decode run."""

    def __init__(
        self,
        core: EngineCore,
        *,
        on_step: Callable[[StepResult], None] | None = None,
        on_decode_run: Callable[[DecodeRun], None] | None = None,
        batch_decodes: bool = True,
    ) -> None:
        self.core = core
        self.clock = 0.0
        self.busy_time = 0.0
        self.num_steps = 0
        self._on_step = on_step
        self._on_decode_run = on_decode_run
        self._batch_decodes = batch_decodes
        self._latency = core.profile.frontend_latency_s
        self._pending: list[tuple[float, int, dict[str, Any]]] = []  # (ready, order, request)
        self._order = itertools.count()

    def observe(
        self,
        *,
        on_step: Callable[[StepResult], None] | None,
        on_decode_run: Callable[[DecodeRun], None] | None,
    ) -> None:
        """Replace the step and decode-run observers."""
        self._on_step, self._on_decode_run = on_step, on_decode_run

    def has_work(self) -> bool:
        return bool(self.core.requests or self._pending)

    def submit(
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
        remote_prefill: bool = False,
    ) -> None:
        """Queue a request arriving at ``now`` (after :meth:`advance_to` ``now``);
        ``remote_prefill``: its prompt's KV comes from another engine's prefill."""
        request: dict[str, Any] = {
            "req_id": req_id,
            "prompt_tokens": prompt_tokens,
            "max_tokens": max_tokens,
            "now": now,
            "cache_salt": cache_salt,
            "seed": seed,
            "output_tokens": output_tokens,
            "block_hashes": block_hashes,
            "remote_prefill": remote_prefill,
        }
        if self._latency:
            # Checked now, as the API server would answer 400 at once.
            self.core.check_request(len(prompt_tokens), max_tokens)
            heapq.heappush(self._pending, (now + self._latency, next(self._order), request))
        else:
            self._admit(now, request)

    def _admit(self, ready: float, request: dict[str, Any]) -> None:
        idle = not self.core.requests
        self.core.add_request(**request)
        if idle and ready > self.clock:
            self.clock = ready

    def advance_to(self, until: float) -> None:
        """Run every step that starts before ``until``."""
        pending = self._pending
        while pending and pending[0][0] < until:
            ready, _, request = heapq.heappop(pending)
            self._run_until(ready)
            self._admit(ready, request)
        self._run_until(until)

    def _run_until(self, until: float) -> None:
        core = self.core
        while self.clock < until and core.requests:
            if self._batch_decodes:
                run = run_decode(core, self.clock, until)
                if run is not None:
                    self.clock = run.end
                    self.busy_time += run.end - run.time
                    self.num_steps += run.num_steps
                    if self._on_decode_run is not None:
                        self._on_decode_run(run)
                    continue
            step = core.step(self.clock)
            if step.idle and not step.preempted:
                raise RuntimeError("the engine has requests but scheduled none")
            self.clock += step.duration
            self.busy_time += step.duration
            self.num_steps += 1
            if self._on_step is not None:
                self._on_step(step)

    def drain(self) -> None:
        """Run until every request finished."""
        self.advance_to(math.inf)
