"""Keep serving when the shared quota store goes away, and go back to it when it returns.

``FallbackQuotaStore`` wraps the shared (Redis) store. When a call fails it logs once, raises
the ``trunkline_quota_store_degraded`` gauge and, fail-open, decides with a per-process
in-memory limiter whose limits are ``rules.local_limits`` (a share of each limit, budgets from
what was left when the store last answered); fail-closed, it refuses. While degraded it probes
the store again every ``probe_every_ms`` on a real request (or the lease heartbeat); the first
success ends the outage: exact limits again, the local counters are dropped, and settles that
could not reach the store are replayed (settling is idempotent, so a replay never refunds
twice), and so is what the requests decided locally used, into the windows they were made in:
without it the budgets forgot the outage, and a tenant could spend what was left of a month
once during it and once again after.

Before the store decides anything again, the requests still in flight get their concurrency
slots back there: those decided locally are reserved in the store (without limits: they were
admitted), and every lease is renewed, set again where it expired during the outage (longer
than ``lease_s``, no renewal reached it). Else the store counted none of them, and admitted as
many requests more than a concurrency limit until they ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Final, NamedTuple

from trunkline.quota.limits import Limits
from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.quota.metrics import QuotaMetrics
from trunkline.quota.rules import Vector, local_limits, still_used
from trunkline.quota.store import (
    KeySpace,
    Outcome,
    QuotaStore,
    ReserveRequest,
    Scope,
    StoreUnavailable,
    Ticket,
)
from trunkline.quota.windows import Windows, windows_at

log = logging.getLogger(__name__)

_LOCAL_PREFIX = "local"
_MAX_REMEMBERED_SCOPES = 100_000
_NO_LIMITS: Final = Limits().vector()


class _Settle(NamedTuple):
    """A settle the store missed. ``decided_locally``: the store never saw the request, which
    is first reserved there without limits (in the windows it was made in), then settled."""

    ticket: Ticket
    tokens: int
    cost: int
    now_ms: int
    decided_locally: ReserveRequest | None = None


class FallbackQuotaStore:
    def __init__(
        self,
        primary: QuotaStore,
        metrics: QuotaMetrics,
        *,
        fail_open: bool = True,
        local_share: float = 1.0,
        probe_every_ms: int = 1000,
        max_pending_settles: int = 100_000,
    ) -> None:
        self._primary = primary
        self._metrics = metrics
        self._fail_open = fail_open
        self._share = local_share
        self._probe_every_ms = probe_every_ms
        self._local = InMemoryQuotaStore(KeySpace(_LOCAL_PREFIX))
        self._degraded_since: int | None = None
        self._probe_at = 0
        self._last_used: dict[tuple[str, str, str], tuple[Vector, Windows]] = {}
        """What each scope had used when the store last answered, and in which windows."""
        self._pending: deque[_Settle] = deque()
        self._decided_locally: dict[str, ReserveRequest] = {}
        """Local reservations in flight, by request id, to be replayed when they settle."""
        self._max_pending = max_pending_settles
        self._replaying: asyncio.Task[None] | None = None
        self._adopted: dict[str, Ticket] = {}
        """Requests decided locally and in flight when the store came back, reserved there
        since (their slots), by request id: their leases are renewed there."""
        self._latecomers: list[ReserveRequest] = []
        """Requests decided locally while the store was being found back (its probe and the
        others' adoption under way), to be reserved there as the replay starts."""
        self.in_flight: Callable[[], Sequence[Ticket]] = tuple
        """The tickets of the requests in flight (the enforcer's): their leases are renewed as
        the store comes back."""

    @property
    def degraded(self) -> bool:
        return self._degraded_since is not None

    async def reserve(self, request: ReserveRequest) -> Outcome:
        now = request.now_ms
        maybe_held: Ticket | None = None
        if self._degraded_since is None or (
            now >= self._probe_at and await self._came_back(now, request.lease_ms, ())
        ):
            try:
                outcome = await self._primary.reserve(request)
            except StoreUnavailable as exc:
                self._fail("reserve", now, exc)
                maybe_held = exc.maybe_reserved  # the store may have counted it all the same
            else:
                self._remember(request, outcome)
                return outcome
        localized = self._localized(request)
        decided = await self._local.reserve(localized) if self._fail_open else None
        if decided and decided.ticket and len(self._decided_locally) < self._max_pending:
            # Reserved in the store under its id as the store comes back (or as it ends), which
            # finds a reservation the store ran meanwhile: counted once, settled when it ends.
            self._decided_locally[request.request_id] = request
        elif maybe_held is not None:  # give it back once the store is back (nothing if not)
            self._keep_for_later(maybe_held, 0, 0, now)
        if decided is None:
            raise StoreUnavailable("quota store unreachable and quotas fail closed")
        return decided._replace(local=True, local_limits=tuple(s.limits for s in localized.scopes))

    async def settle(self, ticket: Ticket, tokens: int, cost: int, now_ms: int) -> None:
        if _is_local(ticket):
            await self._local.settle(ticket, tokens, cost, now_ms)
            self._adopted.pop(ticket.request_id, None)
            decided = self._decided_locally.pop(ticket.request_id, None)
            if decided is not None:  # what it used goes to the store's budgets too
                self._keep_for_later(ticket, tokens, cost, now_ms, decided)
                if self._degraded_since is None:  # settled after the outage ended
                    self._replay_soon()
        elif self._degraded_since is not None:
            self._keep_for_later(ticket, tokens, cost, now_ms)
        else:
            try:
                await self._primary.settle(ticket, tokens, cost, now_ms)
            except StoreUnavailable as exc:
                self._fail("settle", now_ms, exc)
                self._keep_for_later(ticket, tokens, cost, now_ms)

    async def renew(self, tickets: Sequence[Ticket], now_ms: int, lease_ms: int) -> None:
        """Renew leases; while degraded, also probe the store when a probe is due (the
        heartbeat calls this every few seconds), so an idle gateway learns it is back and stops
        saying it is degraded, rather than waiting for its next request."""
        probe_due = self._degraded_since is not None and now_ms >= self._probe_at
        if probe_due and await self._came_back(now_ms, lease_ms, tickets):
            return  # every lease in flight was renewed as it came back
        local = [t for t in tickets if _is_local(t)]
        await self._local.renew(local, now_ms, lease_ms)
        shared = self._in_store(tickets)
        if shared and self._degraded_since is None:
            try:
                await self._primary.renew(shared, now_ms, lease_ms)
            except StoreUnavailable as exc:
                self._fail("renew", now_ms, exc)

    async def usage(
        self, tenant_id: str, scopes: Sequence[tuple[str, str]], now_ms: int
    ) -> list[Vector]:
        return await self._primary.usage(tenant_id, scopes, now_ms)

    async def held(
        self, tenant_id: str, kind: str, ident: str, now_ms: int
    ) -> tuple[int, int, int]:
        return await self._primary.held(tenant_id, kind, ident, now_ms)

    async def probe(self, now_ms: int) -> None:
        await self._primary.probe(now_ms)

    async def replayed(self) -> None:
        """Wait until the settles kept during an outage have been replayed (tests, shutdown)."""
        if self._replaying is not None:
            await self._replaying

    async def close(self) -> None:
        if self._replaying is not None:
            self._replaying.cancel()
        await self._primary.close()

    def _fail(self, operation: str, now_ms: int, exc: Exception) -> None:
        self._metrics.store_errors.labels(operation).inc()
        self._probe_at = now_ms + self._probe_every_ms
        if self._degraded_since is not None:
            return
        self._degraded_since = now_ms
        self._metrics.degraded.set(1)
        mode = f"fail-open, local share {self._share:g}" if self._fail_open else "fail-closed"
        log.error(
            "quota store unreachable; limiting per process (%s) until it is back: %s",
            mode,
            exc,
            extra={"quota_mode": "open" if self._fail_open else "closed"},
        )

    async def _came_back(self, now_ms: int, lease_ms: int, tickets: Sequence[Ticket]) -> bool:
        """Probe the degraded store (one probe at a time: requests arriving while it waits on
        an unreachable store decide locally instead of each waiting for the timeout too). Once
        it answers, give the requests in flight (``tickets``, and the enforcer's) their slots
        there before it decides anything, then end the outage. False: still away."""
        self._probe_at = now_ms + self._probe_every_ms
        try:
            await self._primary.probe(now_ms)
            known = list(self._decided_locally.items())
            for request_id, request in known:
                if request_id not in self._adopted:
                    await self._adopt(request)
            in_store = {t.request_id: t for t in self._in_store((*tickets, *self.in_flight()))}
            in_store.update(self._adopted)
            await self._primary.renew(list(in_store.values()), now_ms, lease_ms)
        except StoreUnavailable as exc:
            self._fail("probe", now_ms, exc)
            return False
        # Requests that arrived while this awaited the store were decided locally: reserved
        # there by the replay, which starts now (adopting them here, one by one while more
        # came, might never end under load).
        tried = dict(known)
        self._latecomers = [r for i, r in self._decided_locally.items() if i not in tried]
        self._recovered(now_ms)
        return True

    async def _adopt(self, request: ReserveRequest) -> None:
        """Reserve in the store a request decided locally and still in flight: its slot."""
        try:
            ticket = await self._reserve_admitted(request)
        except StoreUnavailable:
            raise
        except Exception:  # this one cannot be reserved (no outage): the others still can
            log.exception(
                "a request decided locally could not be reserved in the quota store",
                extra={"reservation": request.request_id},
            )
            return  # replayed when it ends, as before the store came back
        if request.request_id in self._decided_locally:  # not settled meanwhile
            self._adopted[request.request_id] = ticket

    def _in_store(self, tickets: Iterable[Ticket]) -> list[Ticket]:
        """The store's tickets of these requests: theirs, or those of requests decided locally
        that were reserved there once it came back."""
        found = (self._adopted.get(t.request_id) if _is_local(t) else t for t in tickets)
        return [ticket for ticket in found if ticket is not None]

    def _recovered(self, now_ms: int) -> None:
        if self._degraded_since is None:
            return
        outage_s = (now_ms - self._degraded_since) / 1000
        self._degraded_since = None
        self._metrics.degraded.set(0)
        self._local = InMemoryQuotaStore(KeySpace(_LOCAL_PREFIX))
        log.warning(
            "quota store reachable again after %.1f s; exact limits restored, replaying %d settles",
            outage_s,
            len(self._pending),
        )
        self._replay_soon()

    def _replay_soon(self) -> None:
        work = self._pending or self._latecomers
        if work and (self._replaying is None or self._replaying.done()):
            self._replaying = asyncio.create_task(self._replay(), name="quota-settle-replay")

    async def _replay(self) -> None:
        # The latecomers' slots before any settle: one that ended meanwhile is replayed after
        # its adoption (its reservation found held, settled once), never before it.
        while (self._latecomers or self._pending) and self._degraded_since is None:
            if self._latecomers:
                await self._adopt_latecomer(self._latecomers.pop(0))
                continue
            missed = self._pending.popleft()
            try:
                await self._send(missed)
            except StoreUnavailable as exc:
                self._pending.appendleft(missed)
                self._fail("settle", missed.now_ms, exc)
            except Exception:  # this one cannot be replayed; the rest still can
                self._metrics.lost_settles.inc()
                log.exception("a missed quota settle could not be replayed; dropped")

    async def _adopt_latecomer(self, request: ReserveRequest) -> None:
        if request.request_id not in self._decided_locally:
            return  # ended already: its replay reserves and settles it
        try:
            await self._adopt(request)
        except StoreUnavailable as exc:
            self._latecomers.clear()  # still decided locally: adopted as the store comes back
            self._fail("reserve", request.now_ms, exc)

    async def _send(self, missed: _Settle) -> None:
        ticket, request = missed.ticket, missed.decided_locally
        if request is not None:
            ticket = await self._reserve_admitted(request)
        await self._primary.settle(ticket, missed.tokens, missed.cost, missed.now_ms)

    async def _reserve_admitted(self, request: ReserveRequest) -> Ticket:
        """Reserve in the store, without its limits, a request decided locally, in the windows
        it was made in. Reserving again under the same id counts once (a retry, or a request
        reserved as the store came back and replayed as it ends)."""
        unlimited = tuple(s._replace(limits=_NO_LIMITS) for s in request.scopes)
        outcome = await self._primary.reserve(request._replace(scopes=unlimited))
        assert outcome.ticket is not None
        return outcome.ticket

    def _keep_for_later(
        self, ticket: Ticket, tokens: int, cost: int, now_ms: int,
        decided_locally: ReserveRequest | None = None,
    ) -> None:  # fmt: skip
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()
            self._metrics.lost_settles.inc()
        self._pending.append(_Settle(ticket, tokens, cost, now_ms, decided_locally))

    def _remember(self, request: ReserveRequest, outcome: Outcome) -> None:
        if len(self._last_used) > _MAX_REMEMBERED_SCOPES:
            self._last_used.clear()
        for scope, used in zip(request.scopes, outcome.used, strict=True):
            self._last_used[(request.tenant_id, scope.kind, scope.ident)] = (used, outcome.windows)

    def _localized(self, request: ReserveRequest) -> ReserveRequest:
        now = windows_at(request.now_ms)

        def limits_of(scope: Scope) -> Vector:
            last = self._last_used.get((request.tenant_id, scope.kind, scope.ident))
            used = None if last is None else still_used(last[0], last[1], now)
            return local_limits(scope.limits, self._share, used)

        scopes = tuple(s._replace(limits=limits_of(s)) for s in request.scopes)
        return request._replace(scopes=scopes)


def _is_local(ticket: Ticket) -> bool:
    return ticket.reservation_key.startswith(_LOCAL_PREFIX + ":")
