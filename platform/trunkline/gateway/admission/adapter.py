"""The gateway's side of admission: the pure :class:`AdmissionPolicy` behind an async call.

:class:`AsyncAdmission` reads endpoint loads from a :class:`LoadSource` (the engine-state
scraper), decides at once, and — for a held request — waits for the loads to change, letting the
policy re-evaluate every held request each time, until its own request is admitted or rejected.
A rejection raises the coded error of :mod:`trunkline.gateway.admission.errors`; an admission
returns the order in which to try the ranked endpoints and the headers to answer with. A caller
cancelled while held (the client went away) leaves the queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from trunkline.gateway.admission.decision import QUEUED, REJECTED, Decision
from trunkline.gateway.admission.endpoint_views import fresh_view
from trunkline.gateway.admission.errors import DECISION_HEADER, rejection_error
from trunkline.gateway.admission.metrics import AdmissionMetrics
from trunkline.gateway.admission.policy import AdmissionPolicy
from trunkline.gateway.routing.views import EndpointLoad, EndpointView, RequestView
from trunkline.snapshot import TierEntry

__all__ = ["AdmissionResult", "AsyncAdmission", "LoadSource"]

WAIT_HEADER = "x-trunkline-admission-wait-ms"


class LoadSource(Protocol):
    """What admission needs from engine state (the scraper in ``gateway/endpoints/``)."""

    def loads(self) -> Mapping[str, EndpointLoad]:
        """The latest load of every endpoint, by endpoint id."""
        ...

    def load(self, endpoint: str) -> EndpointLoad | None:
        """The latest load of one endpoint (None: not known): a decision reads only those it
        ranks, where ``loads()`` builds every endpoint's."""
        ...

    async def wait_changed(self, timeout: float) -> None:  # noqa: ASYNC109 (the scraper owns it)
        """Return when new loads arrived, or after ``timeout`` seconds."""
        ...

    @property
    def changes(self) -> int:
        """How many times the loads changed (each change wakes ``wait_changed``)."""
        ...

    def routable(self, endpoint: str) -> bool:
        """Whether requests may be sent to ``endpoint`` now (False while it is ejected)."""
        ...

    def serves(self, endpoint: str) -> bool:
        """Whether ``endpoint`` is in the configuration the gateway follows (False once it
        left it, while this gateway's last requests on it drain too)."""
        ...


@dataclass(frozen=True, slots=True)
class AdmissionResult:
    decision: Decision
    order: list[int]
    """Indices into the ranking to try, the admitted endpoint first."""
    headers: dict[str, str]


class AsyncAdmission:
    def __init__(
        self,
        policy: AdmissionPolicy,
        source: LoadSource,
        *,
        metrics: AdmissionMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        recheck_s: float = 0.05,
    ) -> None:
        self.policy = policy
        self.source = source
        self.metrics = metrics or AdmissionMetrics()
        self.clock = clock
        self.recheck_s = recheck_s
        """Longest wait between re-evaluations of held requests when loads do not change."""
        self._waiting: dict[int, asyncio.Future[Decision]] = {}
        self._last_poll: tuple[int, float] | None = None
        """The source's ``changes`` and the time at the last poll of the held requests."""

    async def admit(
        self, request: RequestView, tier: TierEntry, ranked: Sequence[EndpointView]
    ) -> AdmissionResult:
        load = self.source.load
        loads = {view.key: found for view in ranked if (found := load(view.key)) is not None}
        views = [fresh_view(view, loads) for view in ranked]
        now = self.clock()
        decision = self.policy.decide(request, tier, views, now)
        self.metrics.record(tier.name, decision.outcome, decision.reason)
        if decision.outcome == QUEUED:
            decision = await self._hold(decision, tier.name, now)
        if decision.outcome == REJECTED:
            raise rejection_error(decision, tier)
        assert decision.endpoint is not None
        order = [decision.endpoint, *(i for i in range(len(ranked)) if i != decision.endpoint)]
        headers = {DECISION_HEADER: decision.label}
        if decision.wait_s is not None:
            headers[WAIT_HEADER] = str(round(decision.wait_s * 1000))
        return AdmissionResult(decision, order, headers)

    async def _hold(self, queued: Decision, tier: str, since: float) -> Decision:
        assert queued.ticket is not None
        ticket = queued.ticket
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiting[ticket] = future
        self.metrics.held.set(self.policy.held())
        try:
            while not future.done():
                await self.source.wait_changed(self.recheck_s)
                self._reevaluate()
            return future.result()
        finally:
            self._waiting.pop(ticket, None)
            if not future.done():  # the client left (else polls counted how the hold ended)
                self.policy.cancel(ticket)
                self.metrics.queue_wait.labels(tier, "cancelled").observe(self.clock() - since)
            self.metrics.held.set(self.policy.held())

    def _reevaluate(self) -> None:
        """Poll the policy, which judges every held request: once per change of the loads,
        however many held requests wake to it, and otherwise once per ``recheck_s`` (deadlines
        pass without a change). Each woken request polled: with N held, every scrape and every
        request's start and end cost N polls of N requests."""
        changes, now = self.source.changes, self.clock()
        last = self._last_poll
        if last is not None and last[0] == changes and now - last[1] < self.recheck_s:
            return
        self._last_poll = (changes, now)
        reads = _OnDemand(self.source)
        for release in self.policy.poll(now, reads, reads.ejected, reads.gone):
            decision, tier = release.decision, release.held.tier.name
            self.metrics.record(tier, decision.outcome, decision.reason)
            waited = self.clock() - release.held.arrival
            self.metrics.queue_wait.labels(tier, decision.outcome).observe(waited)
            future = self._waiting.get(release.held.ticket)
            if future is not None and not future.done():
                future.set_result(decision)


class _OnDemand(Mapping[str, EndpointLoad]):
    """The loads (and health) of a poll, read from the source as the policy asks for them,
    each once: the endpoints of the held requests, not every endpoint the gateway tracks."""

    __slots__ = ("_health", "_loads", "_served", "_source")

    def __init__(self, source: LoadSource) -> None:
        self._source = source
        self._loads: dict[str, EndpointLoad | None] = {}
        self._health: dict[str, bool] = {}
        self._served: dict[str, bool] = {}

    def __getitem__(self, key: str) -> EndpointLoad:
        if key in self._loads:
            load = self._loads[key]
        else:
            load = self._loads[key] = self._source.load(key)
        if load is None:
            raise KeyError(key)
        return load

    def __iter__(self) -> Iterator[str]:
        return iter(self._source.loads())

    def __len__(self) -> int:
        return len(self._source.loads())

    def out_of_service(self, key: str) -> bool:
        """Ejected, or :meth:`left`."""
        routable = self._health.get(key)
        if routable is None:
            routable = self._health[key] = not self.left(key) and self._source.routable(key)
        return not routable

    def left(self, key: str) -> bool:
        """It left the configuration while a request was held for it (no longer tracked, its
        load would stay what it was at the request's arrival; still draining this gateway's
        requests, it is tracked and scraped, and looks in service all the same)."""
        served = self._served.get(key)
        if served is None:
            served = self._served[key] = self._source.serves(key)
        return not served

    @property
    def ejected(self) -> _Asked:
        return _Asked(self.out_of_service)

    @property
    def gone(self) -> _Asked:
        return _Asked(self.left)


class _Asked:
    """``key in it``: whether an endpoint is out of service (or gone), asked of the source
    once."""

    __slots__ = ("_ask",)

    def __init__(self, ask: Callable[[str], bool]) -> None:
        self._ask = ask

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._ask(key)
