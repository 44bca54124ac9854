"""The in-memory quota store: embedded mode, unit tests, and each gateway's local limiter.

Same keys, same windows, same rules as the Redis store (the contract suite runs on both). A
lock makes each operation atomic, so the control plane's worker threads may read usage while
the gateway's event loop reserves.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from trunkline.quota.rules import ADMITTED, Vector, check, demand, plus
from trunkline.quota.store import (
    COUNTERS_PER_SCOPE,
    LEASE_SLOT,
    KeySpace,
    Outcome,
    ReserveRequest,
    Ticket,
)
from trunkline.quota.windows import MINUTE_MS, windows_at

_SETTLED_FIELDS = (1, 3, 4, 5)
"""Counters a settle corrects: tokens of the minute, day and month, and cost of the month."""


class InMemoryQuotaStore:
    def __init__(self, keyspace: KeySpace | None = None) -> None:
        self._space = keyspace or KeySpace()
        self._lock = threading.Lock()
        self._counters: dict[str, list[int]] = {}
        """key -> [value, expires at (ms)]"""
        self._leases: dict[str, dict[str, int]] = {}
        """key -> request id -> lease expires at (ms)"""
        self._reservations: dict[str, tuple[int, int, int]] = {}
        """key -> (tokens, cost, settle deadline (ms))"""
        self._next_sweep_ms = 0

    async def reserve(self, request: ReserveRequest) -> Outcome:
        windows = windows_at(request.now_ms)
        keys = self._space.request_keys(request, windows)
        now = request.now_ms
        with self._lock:
            self._sweep(now)
            used = [self._read(keys, index, now) for index in range(len(request.scopes))]
            held = self._reservations.get(keys[-1])
            if held is not None and held[2] > now:  # sent again: already counted
                ticket = Ticket(request.request_id, keys, request.tokens, request.cost)
                return Outcome(ADMITTED, tuple(used), ticket, windows)
            need = demand(request.tokens, request.cost)
            verdict = check([s.limits for s in request.scopes], used, need)
            if not verdict.admitted:
                return Outcome(verdict, tuple(used), None, windows)
            minute, day, month = windows.ttls_ms()
            expiries = (now + minute, now + minute, 0, now + day, now + month, now + month)
            for index in range(len(request.scopes)):
                base = index * COUNTERS_PER_SCOPE
                for field in (0, 1, 3, 4, 5):
                    self._add(keys[base + field], need[field], expiries[field], now)
                leases = self._leases.setdefault(keys[base + LEASE_SLOT], {})
                leases[request.request_id] = now + request.lease_ms
            deadline = now + request.reservation_ttl_ms
            self._reservations[keys[-1]] = (request.tokens, request.cost, deadline)
        ticket = Ticket(request.request_id, keys, request.tokens, request.cost)
        return Outcome(ADMITTED, tuple(plus(u, need) for u in used), ticket, windows)

    async def settle(self, ticket: Ticket, tokens: int, cost: int, now_ms: int) -> None:
        with self._lock:
            for key in ticket.lease_keys:
                self._leases.get(key, {}).pop(ticket.request_id, None)
            found = self._reservations.pop(ticket.reservation_key, None)
            if found is None or found[2] <= now_ms:
                return
            delta = (0, tokens - found[0], 0, tokens - found[0], tokens - found[0], cost - found[1])
            for base in range(0, len(ticket.keys) - 1, COUNTERS_PER_SCOPE):
                for field in _SETTLED_FIELDS:
                    counter = self._counters.get(ticket.keys[base + field])
                    if delta[field] and counter is not None and counter[1] > now_ms:
                        counter[0] += delta[field]

    async def renew(self, tickets: Sequence[Ticket], now_ms: int, lease_ms: int) -> None:
        with self._lock:
            for ticket in tickets:
                held = self._reservations.get(ticket.reservation_key)
                if held is None or held[2] <= now_ms:
                    continue  # settled (or past its settle deadline): its slot is free
                for key in ticket.lease_keys:  # set again if it expired meanwhile
                    self._leases.setdefault(key, {})[ticket.request_id] = now_ms + lease_ms

    async def usage(
        self, tenant_id: str, scopes: Sequence[tuple[str, str]], now_ms: int
    ) -> list[Vector]:
        windows = windows_at(now_ms)
        with self._lock:
            out = []
            for kind, ident in scopes:
                keys = self._space.scope_keys(tenant_id, kind, ident, windows)
                out.append(self._read(keys, 0, now_ms))
            return out

    async def held(
        self, tenant_id: str, kind: str, ident: str, now_ms: int
    ) -> tuple[int, int, int]:
        keys = self._space.scope_keys(tenant_id, kind, ident, windows_at(now_ms))
        tokens = cost = count = 0
        with self._lock:
            for request_id, expires in self._leases.get(keys[LEASE_SLOT], {}).items():
                found = self._reservations.get(self._space.reservation_key(tenant_id, request_id))
                if expires > now_ms and found is not None and found[2] > now_ms:
                    tokens, cost, count = tokens + found[0], cost + found[1], count + 1
        return tokens, cost, count

    async def probe(self, now_ms: int) -> None:
        return None  # this process's memory is always there

    async def close(self) -> None:
        return None

    def _read(self, keys: Sequence[str], index: int, now: int) -> Vector:
        base = index * COUNTERS_PER_SCOPE
        values = [self._value(keys[base + field], now) for field in range(COUNTERS_PER_SCOPE)]
        leases = self._leases.get(keys[base + LEASE_SLOT], {})
        for member in [m for m, expires in leases.items() if expires <= now]:
            del leases[member]
        values[LEASE_SLOT] = len(leases)
        return (values[0], values[1], values[2], values[3], values[4], values[5])

    def _value(self, key: str, now: int) -> int:
        counter = self._counters.get(key)
        return counter[0] if counter is not None and counter[1] > now else 0

    def _add(self, key: str, amount: int, expires: int, now: int) -> None:
        counter = self._counters.get(key)
        if counter is None or counter[1] <= now:
            self._counters[key] = [amount, expires]
        else:
            counter[0] += amount
            counter[1] = expires

    def _sweep(self, now: int) -> None:
        """Forget expired counters, leases and reservations, at most once a minute."""
        if now < self._next_sweep_ms:
            return
        self._next_sweep_ms = now + MINUTE_MS
        self._counters = {k: c for k, c in self._counters.items() if c[1] > now}
        for leases in self._leases.values():
            for member in [m for m, expires in leases.items() if expires <= now]:
                del leases[member]
        self._leases = {k: v for k, v in self._leases.items() if v}
        self._reservations = {k: r for k, r in self._reservations.items() if r[2] > now}
