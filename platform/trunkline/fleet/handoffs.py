"""Prefill/decode disaggregation in the fleet simulator: prompts prefilled on prefill engines,
their KV sent over each prefill engine's link, then handed to the engines that serve them.

A prefill engine runs the prompt as a request of one output token (vLLM's prefill side of a
disaggregated request), under its own id. When it finishes, the prompt's KV (the tokens the
serving engine lacks) crosses from the prefill engine's link to the serving engine's, each
link carrying one prompt at a time in the order the prefills finish, and the serving engine
gets the request at the end of that transfer as a remote prefill
(:attr:`~trunkline.engines.requests.EngineRequest.remote_prefill`). The prefill engine frees its
blocks when it finishes, not when the transfer ends as vLLM does: a little optimistic for its KV
capacity, not for time.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from trunkline.engines.events import StepResult
from trunkline.fleet.results import RequestOutcome
from trunkline.workloads.schemas import WorkloadRequest

__all__ = ["Handoff", "Handoffs", "prefill_request_id"]


def prefill_request_id(request_id: str) -> str:
    return f"{request_id}/prefill"


@dataclass(frozen=True, slots=True)
class Handoff:
    """A request whose prompt a prefill engine runs, and where it goes next."""

    serve_key: str
    request: WorkloadRequest
    outcome: RequestOutcome
    transfer_s: float
    """Seconds its KV takes on a link (the prefill engine's, then the serving engine's)."""


class Handoffs:
    """Requests in their prefill, and those whose KV has arrived, in order of arrival."""

    def __init__(self) -> None:
        self._prefilling: dict[str, Handoff] = {}
        self._link_free: dict[str, float] = {}
        self._finished: list[tuple[float, int, str, Handoff]] = []
        self._arrived: list[tuple[float, int, Handoff]] = []
        self._order = itertools.count()

    def expect(self, handoff: Handoff) -> None:
        """``handoff``'s prompt was sent to a prefill engine."""
        self._prefilling[prefill_request_id(handoff.request.request_id)] = handoff

    def observer(self, prefill_key: str) -> Callable[[StepResult], None]:
        """The step observer of the prefill engine ``prefill_key``."""

        def on_step(step: StepResult) -> None:
            for event in step.events:
                if event.usage is not None:
                    self._prefilled(prefill_key, event.req_id, event.time)

        return on_step

    def _prefilled(self, prefill_key: str, req_id: str, at: float) -> None:
        # The links are given out in the order the prefills finish, not the order the engines
        # report them (one engine steps to the next arrival before the other): see
        # :meth:`arrived_before`.
        handoff = self._prefilling.pop(req_id)
        heapq.heappush(self._finished, (at, next(self._order), prefill_key, handoff))

    def _transfer(self, at: float, prefill_key: str, handoff: Handoff) -> None:
        links = self._link_free
        start = max(at, links.get(prefill_key, 0.0), links.get(handoff.serve_key, 0.0))
        links[prefill_key] = links[handoff.serve_key] = arrival = start + handoff.transfer_s
        heapq.heappush(self._arrived, (arrival, next(self._order), handoff))

    def arrived_before(self, until: float) -> Iterator[tuple[float, Handoff]]:
        """Pop, in time order, the handoffs whose KV arrived before ``until``.

        Every prefill engine must have stepped to ``until``: then every prefill finished
        before ``until`` is known, and their transfers take the links in the order they
        finished."""
        finished = self._finished
        while finished and finished[0][0] < until:
            at, _, prefill_key, handoff = heapq.heappop(finished)
            self._transfer(at, prefill_key, handoff)
        arrived = self._arrived
        while arrived and arrived[0][0] < until:
            at, _, handoff = heapq.heappop(arrived)
            yield at, handoff
