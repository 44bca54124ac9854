"""What the gateway calls: reserve a request's quota before sending it, settle it after.

``reserve`` looks up the caller's limits in the snapshot (key, project and tenant scopes),
reserves the prompt estimate plus the completion budget in one store call, and either returns a
``Grant`` (with the ``x-ratelimit-*`` headers it earned) or raises ``RateLimited`` /
``QuotaExhausted`` carrying the headers of the refusal. ``settle_soon`` runs exactly once per
granted request (from the gateway's meter) and settles in the background, off the response
path. A heartbeat renews the concurrency leases of requests still in flight; a request older
than ``max_request_s`` stops being renewed, so no slot can stay taken forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from trunkline.errors import QuotaExhausted, RateLimited, TrunklineError, UpstreamUnavailable
from trunkline.metering.outcomes import BILLED_BY_DEFAULT
from trunkline.quota.estimate import completion_budget, estimate_prompt_tokens, prompt_limit
from trunkline.quota.fallback import FallbackQuotaStore
from trunkline.quota.headers import rate_limit_headers, retry_headers
from trunkline.quota.limits import (
    CONCURRENCY,
    LIMIT_NAMES,
    MONTH_COST,
    NANO,
    REQUESTS,
    Price,
    price_key,
)
from trunkline.quota.metrics import QuotaMetrics
from trunkline.quota.rules import (
    BUDGETS,
    CONCURRENCY_RETRY_MS,
    Vector,
    demand,
    retry_after_ms,
)
from trunkline.quota.store import (
    Outcome,
    QuotaStore,
    ReserveRequest,
    Scope,
    StoreUnavailable,
    Ticket,
)
from trunkline.quota.windows import Clock, Windows, iso_utc, system_clock
from trunkline.settings import QuotaSettings
from trunkline.snapshot.schemas import KeyEntry, Snapshot

log = logging.getLogger(__name__)

MAX_HELD_READ: Final = 256
"""The most requests in flight whose reservations a budget refusal reads (one record each, from
Redis): beyond, the refusal takes them to be what refuses it (the retryable answer)."""

_WHO = {"key": "your API key", "project": "your project", "tenant": "your tenant"}
_WHAT = {
    "requests_per_minute": "requests per minute (RPM)",
    "tokens_per_minute": "tokens per minute (TPM)",
    "concurrent_requests": "concurrent requests",
    "tokens_per_day": "tokens per day",
    "tokens_per_month": "tokens per month",
    "cost_per_month": "cost per month ({currency})",
}


@dataclass(frozen=True, slots=True)
class Grant:
    """An admitted request: what settling it needs, and the headers its answer carries."""

    ticket: Ticket | None
    """``None`` when no scope of the caller has a limit (nothing to settle)."""
    headers: dict[str, str]
    prompt_estimate: int = 0
    price: Price | None = None
    billable_outcomes: tuple[str, ...] = BILLED_BY_DEFAULT
    limits: Sequence[Vector] = ()
    """The limits the ``headers`` were read against, per scope, and the counters then."""
    used: Sequence[Vector] = ()
    windows: Windows | None = None

    def given_back_headers(self) -> dict[str, str]:
        """The ``x-ratelimit-*`` headers once its reservation came back whole (the request
        was never sent, or no engine took it): its tokens are left again; the request still
        counts in the minute."""
        if self.ticket is None or self.windows is None:
            return self.headers
        back = self.ticket.tokens  # the tokens of the minute (TOKENS), the only ones shown
        used = [(u[0], u[1] - back, u[2], u[3], u[4], u[5]) for u in self.used]
        return rate_limit_headers(self.limits, used, self.windows)


UNLIMITED_GRANT: Final = Grant(None, {})


class QuotaEnforcer:
    def __init__(
        self,
        store: QuotaStore,
        settings: QuotaSettings,
        metrics: QuotaMetrics,
        clock: Clock = system_clock,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self._clock = clock
        self._cap = settings.max_reserved_completion_tokens
        self._lease_ms = int(settings.lease_s * 1000)
        self._max_request_ms = int(settings.max_request_s * 1000)
        self._inflight: dict[str, tuple[Ticket, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        # Reservations get ids of their own: a client may send the same x-request-id twice,
        # and must not share (or free) another request's concurrency slot by doing so.
        self._ids = itertools.count()
        self._nonce = secrets.token_hex(6)
        if isinstance(store, FallbackQuotaStore):  # renews them as the store comes back
            store.in_flight = lambda: [ticket for ticket, _since in self._inflight.values()]

    @property
    def degraded(self) -> bool:
        """The shared store is unreachable and quotas are limited per process (or refused)."""
        return bool(getattr(self.store, "degraded", False))

    async def reserve(
        self, snapshot: Snapshot, key: KeyEntry, tier: str, model: str, kind: str,
        body: dict[str, Any], *, prompt_tokens: int | None = None,
        context_length: int | None = None,
    ) -> Grant:  # fmt: skip
        """Reserve what the request may use; ``prompt_tokens``: its prompt's exact length (the
        model's tokenizer counted it), else it is estimated from the body; ``context_length``:
        the model's context window, which bounds each answer."""
        book = snapshot.quotas
        # The snapshot lists only scopes that have a limit: most callers cost three lookups.
        key_limits = book.keys.get(key.key_id)
        project_limits = book.projects.get(key.tenant_id)
        tenant_limits = book.tenants.get(key.tenant_id)
        if prompt_tokens is not None:  # the whole prompt's: the engine may run less of it
            limit = prompt_limit(body, context_length)
            prompt_tokens = prompt_tokens if limit is None else min(prompt_tokens, limit)
        if key_limits is None and project_limits is None and tenant_limits is None:
            return UNLIMITED_GRANT if prompt_tokens is None else Grant(None, {}, prompt_tokens)
        scopes = tuple(
            Scope(kind_, ident, limits.vector())
            for kind_, ident, limits in (
                ("key", key.key_id, key_limits),
                ("project", key.project_id, project_limits),
                ("tenant", key.tenant_id, tenant_limits),
            )
            if limits is not None
        )
        if prompt_tokens is None:
            prompt = estimate_prompt_tokens(kind, body, context_length=context_length)
        else:
            prompt = prompt_tokens
        completion = completion_budget(kind, body, self._cap, context_length=context_length)
        price = book.prices.get(price_key(model, tier))
        cost = price.cost(prompt, 0, completion) if price else 0
        now = self._clock()
        reservation_id = f"{self._nonce}.{next(self._ids)}"
        request = ReserveRequest(
            reservation_id, key.tenant_id, scopes, prompt + completion, cost, now,
            self._lease_ms, self._max_request_ms,
        )  # fmt: skip
        call = asyncio.ensure_future(self.store.reserve(request))
        try:
            # Shielded: a client that leaves while the store answers cancels this request, not
            # the store's call, whose reservation is then given back (never left held).
            outcome = await asyncio.shield(call)
        except asyncio.CancelledError:
            self._spawn(self._give_back(call))
            raise
        except StoreUnavailable:
            self.metrics.decisions.labels("unavailable", "", "store").inc()
            raise UpstreamUnavailable(
                "Quota enforcement is unavailable right now; try again shortly.",
                reason="quota_unavailable",
                extra={"headers": retry_headers(1000)},
            ) from None
        # Decided locally, the limits in force are this gateway's share of each.
        enforced = outcome.local_limits or [s.limits for s in scopes]
        headers = rate_limit_headers(enforced, outcome.used, outcome.windows)
        decided_by = "local" if outcome.local else "store"
        if not outcome.verdict.admitted or outcome.ticket is None:
            prompt_alone = demand(prompt, price.cost(prompt, 0, 0) if price else 0)
            held = await self._held(request, outcome, now)
            raise self._refusal(
                request, outcome, headers, decided_by, prompt_alone, held, book.currency
            )
        self.metrics.decisions.labels("admitted", "", decided_by).inc()
        self._inflight[reservation_id] = (outcome.ticket, now)
        return Grant(
            outcome.ticket, headers, prompt, price, book.billable_outcomes, enforced,
            outcome.used, outcome.windows,
        )  # fmt: skip

    def settle_soon(
        self, grant: Grant, prompt: int, cached: int, completion: int, *, measured: bool,
        reached_engine: bool, outcome: str = "completed",
    ) -> None:  # fmt: skip
        """Settle ``grant`` in the background to what the request used. ``measured``: the
        engine reported its usage. Otherwise a request the engine saw is charged its prompt
        estimate plus the ``completion`` tokens it streamed, one that never reached an engine
        nothing at all. Its cost counts only when the price book bills its ``outcome``
        (``metering.outcomes``): token limits count what the engines did, cost budgets what
        the bill will say."""
        ticket = grant.ticket
        if ticket is None:
            return
        self._inflight.pop(ticket.request_id, None)
        if not measured:
            prompt, cached = (grant.prompt_estimate if reached_engine else 0), 0
            completion = completion if reached_engine else 0
        billed = grant.price is not None and outcome in grant.billable_outcomes
        cost = grant.price.cost(prompt, cached, completion) if billed and grant.price else 0
        self._spawn(self._settle(ticket, prompt + completion, cost))

    def release(self, grant: Grant) -> None:
        """Give the whole reservation back: the request never left the gateway."""
        self.settle_soon(grant, 0, 0, 0, measured=False, reached_engine=False)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _give_back(self, call: asyncio.Future[Outcome]) -> None:
        """Release what a reservation whose request was cancelled meanwhile took, if any."""
        try:
            outcome = await call
        except Exception:  # nothing was reserved, or nothing we can know of
            return
        if outcome.ticket is not None:
            await self._settle(outcome.ticket, 0, 0)

    async def _settle(self, ticket: Ticket, tokens: int, cost: int) -> None:
        try:
            await self.store.settle(ticket, tokens, cost, self._clock())
        except Exception:  # a lost settle leaves the reservation charged, never more
            log.exception("quota settle failed", extra={"reservation": ticket.request_id})

    async def renew_leases(self) -> None:
        """Renew the leases of requests in flight; forget those older than ``max_request_s``."""
        now = self._clock()
        cutoff = now - self._max_request_ms
        for reservation in [r for r, (_t, since) in self._inflight.items() if since < cutoff]:
            del self._inflight[reservation]
        tickets = [ticket for ticket, _since in self._inflight.values()]
        # Called with none too: a store that is degraded probes on this beat (an idle gateway
        # learns it is back); the stores send nothing for an empty list.
        await self.store.renew(tickets, now, self._lease_ms)

    async def start(self) -> None:
        self._heartbeat = asyncio.create_task(self._beat(), name="quota-heartbeat")

    async def drain(self) -> None:
        """Wait for the settles under way (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await self.drain()
        await self.store.close()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                await self.renew_leases()
            except Exception:
                log.warning("renewing quota leases failed", exc_info=True)

    async def _held(self, request: ReserveRequest, outcome: Outcome, now: int) -> Vector | None:
        """What the refusing scope's requests in flight hold reserved of a budget that refused
        (None: none in flight, another limit refused, or it cannot be told for sure)."""
        verdict = outcome.verdict
        if verdict.limit not in BUDGETS or outcome.local:
            return None
        in_flight = outcome.used[verdict.scope][CONCURRENCY]
        if not 0 < in_flight <= MAX_HELD_READ:
            return None  # none, or too many to read on every refusal: the retryable answer
        scope = request.scopes[verdict.scope]
        try:
            tokens, cost, found = await self.store.held(
                request.tenant_id, scope.kind, scope.ident, now
            )
        except Exception:
            log.warning("reading what requests in flight hold failed", exc_info=True)
            return None
        if found < in_flight:
            # One settled between the refusal and this read: its reservation is in the counters
            # the refusal saw but not here, and would read as spent. Not sure: retryable.
            return None
        return demand(tokens, cost)

    def _refusal(
        self,
        request: ReserveRequest,
        outcome: Outcome,
        headers: dict[str, str],
        decided_by: str,
        prompt_alone: Vector,
        held: Vector | None,
        currency: str,
    ) -> TrunklineError:
        verdict = outcome.verdict
        assert verdict.limit is not None
        limit_name = LIMIT_NAMES[verdict.limit]
        scope = request.scopes[verdict.scope]
        bound = scope.limits[verdict.limit]
        used = outcome.used[verdict.scope][verdict.limit]
        wanted = demand(request.tokens, request.cost)[verdict.limit]
        if outcome.local and wanted <= bound:
            return self._share_refusal(request, outcome, headers, decided_by, currency)

        def show(value: int) -> str:
            return _show(verdict.limit, value, currency)

        numbers = f"Limit {show(bound)}, Used {show(used)}, Requested {show(wanted)}"
        where = f"{_WHO[scope.kind]} on {_WHAT[limit_name].format(currency=currency)}"
        wait_ms = retry_after_ms(verdict, outcome.windows)
        extra = {"headers": {**headers, **retry_headers(wait_ms)}, "limit": limit_name}
        if verdict.limit in BUDGETS:
            in_flight = outcome.used[verdict.scope][CONCURRENCY]
            case, spent = _budget_case(
                used,
                None if held is None else held[verdict.limit],
                wanted,
                prompt_alone[verdict.limit],
                bound,
                in_flight,
            )
            if case == "too_large":
                # Not spent: the prompt fits, its completion reservation (max_tokens, the
                # gateway's maximum when unset) does not. Not insufficient_quota, which clients
                # take for a spent budget and stop.
                self.metrics.decisions.labels("rate_limited", limit_name, decided_by).inc()
                left = show(max(bound - spent, 0))
                return RateLimited(
                    f"Request too large for {where}: {numbers}; {left} left. Lower max_tokens "
                    "(a request without it reserves the gateway's maximum) or the prompt.",
                    reason="rate_limit_exceeded",
                    extra={**extra, "headers": {**headers, **retry_headers(None)}},
                )
            if case == "in_flight":
                self.metrics.decisions.labels("rate_limited", limit_name, decided_by).inc()
                return RateLimited(
                    f"Not enough left of the budget of {where} while {in_flight} of its requests "
                    f"are in flight: {numbers} (used counts their reservations). Retry when "
                    "they finish: what they do not use goes back to the budget.",
                    reason="rate_limit_exceeded",
                    extra={**extra, "headers": {**headers, **retry_headers(CONCURRENCY_RETRY_MS)}},
                )
            self.metrics.decisions.labels("quota_exhausted", limit_name, decided_by).inc()
            end = outcome.windows.day_end_ms if limit_name == "tokens_per_day" else None
            resets = f"It resets at {iso_utc(end or outcome.windows.month_end_ms)}."
            if bound == 0:  # no new window helps
                resets = "This budget admits no requests."
            return QuotaExhausted(
                f"You exceeded the budget of {where}: {numbers}. {resets}",
                reason="insufficient_quota",
                extra=extra,
            )
        self.metrics.decisions.labels("rate_limited", limit_name, decided_by).inc()
        if wait_ms is None and (verdict.limit in (REQUESTS, CONCURRENCY) or bound == 0):
            message = f"Refused by {where}: {numbers}. This limit admits no requests."
        elif wait_ms is None:
            message = f"Request too large for {where}: {numbers}. Lower max_tokens or the prompt."
        else:
            message = f"Rate limit reached for {where}: {numbers}. "
            message += f"Please try again in {wait_ms / 1000:.3g}s."
        return RateLimited(message, reason="rate_limit_exceeded", extra=extra)

    def _share_refusal(
        self,
        request: ReserveRequest,
        outcome: Outcome,
        headers: dict[str, str],
        decided_by: str,
        currency: str,
    ) -> TrunklineError:
        """A refusal by this gateway's own limiter (the store unreachable) of a request the
        whole limit would hold. It enforces a share of each limit (of a budget, of what was
        left when the store last answered): a budget already spent then stays spent; any other
        refusal may pass on another gateway or once the store is back, so it is retryable, and
        never *too large*."""
        verdict = outcome.verdict
        assert verdict.limit is not None
        limit_name = LIMIT_NAMES[verdict.limit]
        scope = request.scopes[verdict.scope]
        share = outcome.local_limits[verdict.scope][verdict.limit]
        values = (
            share,
            outcome.used[verdict.scope][verdict.limit],
            demand(request.tokens, request.cost)[verdict.limit],
        )
        shown = [_show(verdict.limit, value, currency) for value in values]
        numbers = "Limit {}, Used {}, Requested {}".format(*shown)
        where = f"{_WHO[scope.kind]} on {_WHAT[limit_name].format(currency=currency)}"
        if verdict.limit in BUDGETS and share == 0:
            self.metrics.decisions.labels("quota_exhausted", limit_name, decided_by).inc()
            end = outcome.windows.day_end_ms if limit_name == "tokens_per_day" else None
            return QuotaExhausted(
                f"You exceeded the budget of {where}, spent when the quota store last answered. "
                f"It resets at {iso_utc(end or outcome.windows.month_end_ms)}.",
                reason="insufficient_quota",
                extra={"headers": {**headers, **retry_headers(None)}, "limit": limit_name},
            )
        wait_ms = retry_after_ms(verdict, outcome.windows)
        if wait_ms is None:  # over the share alone, or a budget's share spent: not the limit
            wait_ms = CONCURRENCY_RETRY_MS
        self.metrics.decisions.labels("rate_limited", limit_name, decided_by).inc()
        return RateLimited(
            f"Rate limit reached for {where} on this gateway, which admits a share of the limit "
            f"while the quota store is unreachable: {numbers}. "
            f"Please try again in {wait_ms / 1000:.3g}s.",
            reason="rate_limit_exceeded",
            extra={"headers": {**headers, **retry_headers(wait_ms)}, "limit": limit_name},
        )


def _budget_case(
    used: int, held: int | None, wanted: int, prompt: int, bound: int, in_flight: int
) -> tuple[str, int]:
    """Why a budget refused a request, and how much of it is spent. ``used`` counts the
    reservations of the scope's requests in flight (``held`` of it, None when that could not
    be read), which give back what they do not use:

    - ``in_flight``: it fits once they settle, should they use nothing more (or, ``held``
      unread, they may well be what refuses it);
    - ``too_large``: the prompt fits what is left, its completion reservation does not (or
      the prompt alone is over the whole budget, which no new window helps);
    - ``spent``: not even the prompt fits."""
    spent = max(used - (held or 0), 0)
    if held is not None and spent + wanted <= bound:
        return "in_flight", spent
    if spent + prompt <= bound or 0 < bound < prompt:
        return "too_large", spent
    return ("in_flight" if held is None and in_flight else "spent"), spent


def _show(limit: int | None, value: int, currency: str) -> str:
    """A limit's value as a refusal shows it: money as ``$12.00`` (US dollars) or
    ``EUR 12.00`` (any other currency, by its ISO 4217 code)."""
    if limit != MONTH_COST:
        return str(value)
    amount = Decimal(value) / NANO
    # Cents, unless that shows a small budget or request as 0.00.
    text = f"{amount:.2f}" if amount >= 1 or amount == 0 else f"{amount.normalize():f}"
    return f"${text}" if currency == "USD" else f"{currency} {text}"
