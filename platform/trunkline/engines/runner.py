"""Drive an :class:`EngineCore` in wall-clock time on the running asyncio loop.

A driver task steps the core whenever it has work, sleeps ``duration * time_scale`` for each
step, then hands the step's token events to the waiting requests. Engine time (what the core,
the metrics and the usage see) advances by exactly the modelled step durations while busy, and
by wall-clock time / ``time_scale`` while idle, so Python overhead never leaks into modelled
latencies. ``time_scale=0`` runs as fast as the loop allows. ``on_step`` sees every step, as
:class:`~trunkline.engines.virtual.VirtualEngine`'s does: both drivers step the same core.

:meth:`AsyncEngine.pause`, :meth:`AsyncEngine.step_once` and :meth:`AsyncEngine.wait_for` let
tests walk the engine through exact states without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Callable, Sequence

from trunkline.engines.core import EngineCore
from trunkline.engines.events import StepResult, TokenEvent
from trunkline.engines.metrics import EngineMetrics

__all__ = ["AsyncEngine", "EngineClosedError", "RequestStream"]


class EngineClosedError(RuntimeError):
    """The engine stopped before the request finished."""


class RequestStream:
    """The token events of one request, in order: ``async for event in stream``."""

    def __init__(self, engine: AsyncEngine, req_id: str) -> None:
        self.req_id = req_id
        self._engine = engine
        self._queue: asyncio.Queue[TokenEvent | None] = asyncio.Queue()
        self.done = False

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> TokenEvent:
        if self.done:
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            self.done = True
            raise EngineClosedError("the engine stopped before the request finished")
        if event.finished:
            self.done = True
        return event

    def abort(self) -> None:
        """Stop generating (a no-op once the request finished)."""
        if not self.done:
            self.done = True
            self._engine.abort(self.req_id)

    def _put(self, event: TokenEvent | None) -> None:
        self._queue.put_nowait(event)


class AsyncEngine:
    """An :class:`EngineCore` running in (scaled) wall-clock time."""

    def __init__(
        self,
        core: EngineCore,
        *,
        time_scale: float = 1.0,
        metrics: EngineMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_step: Callable[[StepResult], None] | None = None,
    ) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        self.core = core
        self.time_scale = time_scale
        self._metrics = metrics
        self._on_step = on_step
        self._clock = clock
        self._streams: dict[str, RequestStream] = {}
        self._ids = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._paused = False
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        # Engine time = min(anchor + (wall - anchor_wall) / time_scale, cap).
        self._anchor = 0.0
        self._anchor_wall = clock()
        self._cap = math.inf

    def now(self) -> float:
        """Current engine time in seconds."""
        if self.time_scale == 0:
            return min(self._anchor, self._cap)
        elapsed = (self._clock() - self._anchor_wall) / self.time_scale
        return min(self._anchor + elapsed, self._cap)

    @property
    def closed(self) -> bool:
        """The engine stopped: it takes no request and finishes none."""
        return self._closed

    def submit(
        self,
        prompt_tokens: Sequence[int],
        max_tokens: int,
        *,
        cache_salt: str | None = None,
        seed: int | None = None,
        ends_at_max: bool = False,
        stop_texts: Sequence[str] = (),
        min_tokens: int = 0,
    ) -> RequestStream:
        """Queue a request (raises ``ValueError`` when the core rejects it)."""
        if self._closed:
            raise EngineClosedError("the engine is closed")
        req_id = f"req-{next(self._ids)}"
        arrival = self.now()
        self.core.add_request(
            req_id,
            prompt_tokens,
            max_tokens,
            arrival,
            cache_salt=cache_salt,
            seed=seed,
            ends_at_max=ends_at_max,
            stop_texts=stop_texts,
            min_tokens=min_tokens,
        )
        if self._cap == math.inf:
            # An idle engine starts its next step at the arrival: the driver's wake-up latency,
            # divided by time_scale, must not show up as modelled queueing time.
            self._set_time(arrival, cap=arrival)
        stream = RequestStream(self, req_id)
        self._streams[req_id] = stream
        self._ensure_driver()
        self._wake.set()
        self._notify()
        return stream

    def abort(self, req_id: str) -> None:
        self._streams.pop(req_id, None)
        if self.core.abort(req_id):
            self._notify()

    def pause(self) -> None:
        """Stop stepping after the current step (requests keep queueing)."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._wake.set()

    async def step_once(self) -> StepResult:
        """Run exactly one step while paused (sleeping as the driver would)."""
        if not self._paused:
            raise RuntimeError("step_once() needs a paused engine")
        async with self._lock:
            return await self._advance()

    async def wait_for(self, predicate: Callable[[EngineCore], bool]) -> None:
        """Return once ``predicate(core)`` holds; re-checked after every change."""
        while True:
            changed = self._changed
            if predicate(self.core):
                return
            await changed.wait()

    async def aclose(self) -> None:
        """Stop the driver; unfinished requests end with :class:`EngineClosedError`."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for stream in self._streams.values():
            stream._put(None)
        self._streams.clear()
        self._notify()

    def _ensure_driver(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drive())

    async def _drive(self) -> None:
        try:
            while True:
                while self._paused or not self.core.has_unfinished_requests():
                    self._set_time(self.now(), cap=math.inf)  # idle time passes
                    self._wake.clear()
                    await self._wake.wait()
                async with self._lock:
                    if not self._paused:
                        await self._advance()
        except Exception:
            # A bug in the core must not leave clients hanging forever.
            for stream in self._streams.values():
                stream._put(None)
            self._streams.clear()
            raise

    async def _advance(self) -> StepResult:
        start = self.now()
        result = self.core.step(start)
        end = start + result.duration
        self._set_time(start, cap=end)
        await asyncio.sleep(result.duration * self.time_scale)
        self._set_time(end, cap=end)
        self._deliver(result)
        return result

    def _set_time(self, engine_time: float, *, cap: float) -> None:
        self._anchor = engine_time
        self._anchor_wall = self._clock()
        self._cap = cap

    def _deliver(self, result: StepResult) -> None:
        if self._metrics is not None:
            self._metrics.observe(result.events)
        if self._on_step is not None:
            self._on_step(result)
        for event in result.events:
            stream = self._streams.get(event.req_id)
            if stream is None:
                continue  # aborted while the step ran
            if event.finished:
                del self._streams[event.req_id]
            stream._put(event)
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
