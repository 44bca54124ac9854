"""Budgets refused while requests of the scope are in flight: their reservations count as used
until they settle, so a refusal reads what they hold before it calls a budget spent."""

from __future__ import annotations

from typing import Any

from tests.unit.quota.test_quota_gateway import (
    CHAT,
    PROMPT,
    RESERVED,
    USED,
    error_of,
    open_stream,
)

from trunkline.quota.limits import Limits
from trunkline.quota.memory import InMemoryQuotaStore
from unit.quota.conftest import Gateway


def test_a_budget_held_by_requests_in_flight_is_not_called_spent(make_gateway: Any) -> None:
    """One long stream's reservation used to make every other call a 429 insufficient_quota,
    which clients take for a spent budget and stop on; it settles at what it used."""
    gw: Gateway = make_gateway()
    gw.limit(key=Limits(tokens_per_day=PROMPT + RESERVED - 6))
    events = gw.call(open_stream, gw)  # reserves RESERVED of the day's budget

    refused = gw.post(CHAT)

    error = error_of(refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert "1 of its requests are in flight" in error["message"]
    assert refused.headers["retry-after"] == "1" and "x-should-retry" not in refused.headers
    gw.call(events.aclose)
    gw.call(gw.service.quota.drain)
    assert gw.post({**CHAT, "max_tokens": 5}).status_code == 200, "what it did not use is back"


def test_a_budget_spent_by_settled_requests_is_spent_though_others_are_in_flight(
    make_gateway: Any,
) -> None:
    """What requests in flight hold is read from the store: if the request would not fit even
    once they gave back all of it, the budget is spent, whatever is in flight."""
    gw: Gateway = make_gateway()
    gw.limit(key=Limits(tokens_per_day=10_000))
    assert gw.post(CHAT).status_code == 200  # settles USED
    events = gw.call(open_stream, gw)  # reserves RESERVED more, in flight
    gw.limit(key=Limits(tokens_per_day=USED + PROMPT - 1))  # not even a prompt left

    refused = gw.post(CHAT)

    error_of(refused, 429, "insufficient_quota", "insufficient_quota")
    assert refused.headers["x-should-retry"] == "false"
    gw.call(events.aclose)


class SettledMeanwhile(InMemoryQuotaStore):
    """A store where the requests in flight at a refusal have settled by the time what they
    hold is read (settles run in the background)."""

    async def held(
        self, tenant_id: str, kind: str, ident: str, now_ms: int
    ) -> tuple[int, int, int]:
        return 0, 0, 0


def test_a_request_settling_between_a_refusal_and_the_held_read_is_not_taken_for_spent(
    make_gateway: Any,
) -> None:
    """Its reservation was in the counters the refusal saw, not in what was read after: the
    budget looked spent (insufficient_quota, which clients stop on) though it was not."""
    gw: Gateway = make_gateway(store=SettledMeanwhile())
    gw.limit(key=Limits(tokens_per_day=PROMPT + RESERVED - 6))
    events = gw.call(open_stream, gw)

    refused = gw.post(CHAT)

    error_of(refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert refused.headers["retry-after"] == "1"
    gw.call(events.aclose)
