"""Cost budgets are amounts of the price book's currency: set as ``cost_per_month``, read back
with the ``currency``, shown by the gateway in it; the deprecated ``cost_per_month_usd`` works
while that currency is USD alone; a book in a new currency does not silently re-read them."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

import msgspec
import pytest
from sqlalchemy import select

from trunkline.billing.pricebook import BUNDLED, PriceBook, load_price_book_file
from trunkline.billing.pricebook_store import (
    apply_price_book,
    price_book_currency,
    withdraw_price_version,
)
from trunkline.errors import Conflict, InvalidRequest, QuotaExhausted
from trunkline.models import TenantQuota, Tier, TierQuota
from trunkline.quota.enforcer import QuotaEnforcer, _show
from trunkline.quota.limits import MONTH_COST, NANO, REQUESTS, price_key
from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.quota.metrics import QuotaMetrics
from trunkline.quota.policy import priced
from trunkline.quota.schemas import QuotaLimits, ScopeLimits
from trunkline.quota.store import ReserveRequest, Scope
from trunkline.quota.windows import system_clock
from trunkline.settings import QuotaSettings
from trunkline.tenancy.changes import mark_config_changed
from unit.controlplane.cp_support import World, snapshot

T = "/api/v1/tenants"
BOTH = "give cost_per_month or its deprecated alias cost_per_month_usd, not both"


def in_currency(currency: str, starting: str = "2026-01-01T00:00:00Z") -> PriceBook:
    """The bundled price book, in ``currency``, from ``starting``."""
    moved = datetime.fromisoformat(starting)
    return PriceBook(
        [
            msgspec.structs.replace(v, currency=currency, effective_from=moved)
            for v in load_price_book_file(BUNDLED).versions
        ]
    )


def apply_book(world: World, book: PriceBook, *, keep_budget_amounts: bool = False) -> None:
    with world.runtime.session_factory() as session, session.begin():
        apply_price_book(session, book, keep_budget_amounts=keep_budget_amounts)
    world.runtime.publish()


@pytest.mark.parametrize(
    ("doc", "currency", "stored"),
    [
        (ScopeLimits(cost_per_month_usd=12.5), "USD", ScopeLimits(cost_per_month=12.5)),
        (ScopeLimits(cost_per_month_usd=None), "USD", ScopeLimits(cost_per_month=None)),
        (ScopeLimits(cost_per_month=12.5), "EUR", ScopeLimits(cost_per_month=12.5)),
        (ScopeLimits(tokens_per_day=5), "EUR", ScopeLimits(tokens_per_day=5)),
        (
            QuotaLimits(key=ScopeLimits(cost_per_month_usd=3)),
            "USD",
            QuotaLimits(key=ScopeLimits(cost_per_month=3)),
        ),
    ],
)
def test_the_usd_name_is_cost_per_month_while_the_book_is_in_usd(
    doc: QuotaLimits | ScopeLimits, currency: str, stored: QuotaLimits | ScopeLimits
) -> None:
    assert priced(doc, currency) == stored


@pytest.mark.parametrize(
    ("doc", "currency", "at", "field", "message"),
    [
        (
            ScopeLimits(cost_per_month_usd=12.5),
            "EUR",
            "",
            "cost_per_month_usd",
            "cost_per_month_usd is a budget in US dollars, but the price book bills in EUR: "
            "give cost_per_month, in EUR",
        ),
        (ScopeLimits(cost_per_month_usd=None), "GBP", "", "cost_per_month_usd", "bills in GBP"),
        (
            ScopeLimits(cost_per_month=1, cost_per_month_usd=1),
            "USD",
            "",
            "cost_per_month_usd",
            BOTH,
        ),
        (
            QuotaLimits(project=ScopeLimits(cost_per_month_usd=3)),
            "EUR",
            "quota.",
            "quota.project.cost_per_month_usd",
            "bills in EUR",
        ),
    ],
)
def test_the_usd_name_is_refused_in_another_currency_or_beside_the_new_one(
    doc: QuotaLimits | ScopeLimits, currency: str, at: str, field: str, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message) as refused:
        priced(doc, currency, at)
    assert refused.value.param == field


@pytest.mark.parametrize(
    ("currency", "nano", "shown"),
    [
        ("USD", 12 * NANO, "$12.00"),
        ("EUR", 12 * NANO, "EUR 12.00"),
        ("EUR", 99_500_000_000, "EUR 99.50"),
        ("EUR", 19_000, "EUR 0.000019"),  # under one unit: in full, not 0.00
        ("JPY", 0, "JPY 0.00"),
    ],
)
def test_refusals_show_money_in_the_price_book_currency(
    currency: str, nano: int, shown: str
) -> None:
    assert _show(MONTH_COST, nano, currency) == shown
    assert _show(REQUESTS, 7, currency) == "7"


def test_a_euro_price_book_takes_budgets_in_euros_and_refuses_the_usd_name(world: World) -> None:
    apply_book(world, in_currency("EUR"), keep_budget_amounts=True)
    acme = world.tenant("acme")

    bad = world.admin.put(f"{T}/{acme}/quota", {"tenant": {"cost_per_month_usd": 50}}, 400)
    assert bad["type"] == "urn:trunkline:problem:invalid_request"
    assert bad["errors"][0]["field"] == "tenant.cost_per_month_usd"
    assert "the price book bills in EUR: give cost_per_month, in EUR" in bad["detail"]
    key = world.create_key("acme-admin", "acme", "demo")["key"]["key_id"]
    world.api("acme-admin").put(f"{T}/{acme}/keys/{key}/quota", {"cost_per_month_usd": 1}, 400)

    view = world.admin.put(f"{T}/{acme}/quota", {"tenant": {"cost_per_month": 50}})
    assert view["currency"] == "EUR"
    assert view["limits"]["tenant"]["cost_per_month"] == 50
    assert view["usage"]["cost_per_month"]["limit"] == 50
    assert "cost_per_month_usd" not in view["usage"], "no dollars shown where none are counted"
    quotas = snapshot(world.runtime).quotas
    assert quotas.currency == "EUR"
    assert quotas.tenants[acme].cost_per_month == 50 * NANO


def test_the_gateway_refuses_a_spent_euro_budget_in_euros(
    world: World, store: InMemoryQuotaStore
) -> None:
    """With 50 EUR set and a EUR price book, the request that fits exactly is admitted and the
    next one refused, each reckoned and shown in euros."""
    apply_book(world, in_currency("EUR"), keep_budget_amounts=True)
    acme = world.tenant("acme")
    world.admin.put(f"{T}/{acme}/quota", {"tenant": {"cost_per_month": 50}})
    key_id = world.create_key("acme-dev", "acme", "demo")["key"]["key_id"]
    book = snapshot(world.runtime)
    entry, model = book.keys[key_id], "llama-3.1-8b-instruct"
    price = book.quotas.prices[price_key(model, "gold")]
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
    request = price.cost(100, 0, 50)
    # What acme spent before, through another gateway: all of the budget but this request.
    limits = book.quotas.tenants[acme].vector()
    spent = ReserveRequest(
        "before", acme, (Scope("tenant", acme, limits),), 0, 50 * NANO - request,
        system_clock(), 60_000, 3_600_000,
    )  # fmt: skip
    enforcer = QuotaEnforcer(store, QuotaSettings(), QuotaMetrics())
    reserve = partial(enforcer.reserve, book, entry, "gold", model, "chat", body, prompt_tokens=100)

    async def spend_it_all() -> QuotaExhausted:
        before = await store.reserve(spent)
        assert before.ticket is not None
        await store.settle(before.ticket, 0, spent.cost, system_clock())
        grant = await reserve()  # exactly what is left
        enforcer.settle_soon(grant, 100, 0, 50, measured=True, reached_engine=True)
        await enforcer.drain()
        with pytest.raises(QuotaExhausted) as refused:
            await reserve()
        return refused.value

    refusal = world.client.blocking_portal.call(spend_it_all)

    assert "budget of your tenant on cost per month (EUR)" in refusal.message
    assert request == 75_000  # 100 tokens at 0.30 EUR and 50 at 0.90 EUR per million (gold)
    assert "Limit EUR 50.00, Used EUR 50.00, Requested EUR 0.000075" in refusal.message


def test_in_usd_the_old_name_still_sets_the_budget_and_reads_back(world: World) -> None:
    acme = world.tenant("acme")
    view = world.admin.put(f"{T}/{acme}/quota", {"tenant": {"cost_per_month_usd": 12.5}})
    assert view["currency"] == "USD"
    assert view["overrides"]["tenant"] == {"cost_per_month": 12.5}
    # Read-only usage keeps the old name too, for consumers written before the rename.
    assert view["usage"]["cost_per_month_usd"] == view["usage"]["cost_per_month"]
    assert view["usage"]["cost_per_month"]["limit"] == 12.5
    assert snapshot(world.runtime).quotas.tenants[acme].cost_per_month == 12_500_000_000

    both = {"tenant": {"cost_per_month": 1, "cost_per_month_usd": 1}}
    bad = world.admin.put("/api/v1/tiers/gold/quota", both, 400)
    assert bad["errors"] == [
        {"field": "tenant.cost_per_month_usd", "message": BOTH, "source": "body"}
    ]


PREVIOUS_RELEASE_FIELDS = {
    "requests_per_minute", "tokens_per_minute", "concurrent_requests", "tokens_per_day",
    "tokens_per_month", "cost_per_month_usd",
}  # fmt: skip
"""What a control plane of the release before the rename reads in a scope (it refuses the
rest): one rolled back, or not yet upgraded beside this one."""


def test_a_budget_is_stored_under_the_name_the_previous_release_reads(world: World) -> None:
    """Stored as cost_per_month, a budget broke every read of its document by a control plane
    of the previous release: its snapshot builds and quota views failed on the unknown field."""
    world.admin.put("/api/v1/tiers/gold/quota", {"tenant": {"cost_per_month": 50}})
    acme = world.tenant("acme")
    world.admin.put(f"{T}/{acme}/quota", {"tenant": {"cost_per_month": None}})
    with world.runtime.session_factory() as session:
        gold = session.scalars(select(Tier.id).where(Tier.name == "gold")).one()
        row = session.get(TierQuota, gold)
        assert row is not None
        assert row.limits["tenant"] == {"cost_per_month_usd": 50}
        stored = session.scalars(select(TenantQuota.limits)).all()
    assert [doc["tenant"] for doc in stored] == [{"cost_per_month_usd": None}]
    for doc in [row.limits, *stored]:
        assert all(set(scope) <= PREVIOUS_RELEASE_FIELDS for scope in doc.values())
    assert world.admin.get("/api/v1/tiers/gold/quota")["tenant"] == {"cost_per_month": 50}


def test_a_budget_stored_under_the_old_name_reads_as_cost_per_month(world: World) -> None:
    with world.runtime.session_factory() as session, session.begin():
        gold = session.scalars(select(Tier.id).where(Tier.name == "gold")).one()
        row = session.get(TierQuota, gold)
        assert row is not None
        row.limits = {"tenant": {"cost_per_month_usd": 7}, "project": {}, "key": {}}
        mark_config_changed(session)
    world.runtime.publish()

    assert world.admin.get("/api/v1/tiers/gold/quota")["tenant"] == {"cost_per_month": 7}
    assert snapshot(world.runtime).quotas.tenants[world.tenant("acme")].cost_per_month == 7 * NANO


def test_a_price_book_in_a_new_currency_is_refused_while_budgets_are_set(world: World) -> None:
    """The shipped bronze tier has a budget of 100 (US dollars, the bundled book's): a euro
    book would make it 100 euros without a word."""
    with pytest.raises(Conflict, match=r"from USD to EUR.*tier bronze, tenant scope: 100"):
        apply_book(world, in_currency("EUR"))
    assert snapshot(world.runtime).quotas.currency == "USD"

    apply_book(world, in_currency("EUR"), keep_budget_amounts=True)  # on purpose
    assert snapshot(world.runtime).quotas.currency == "EUR"


def test_without_budgets_a_new_currency_is_taken(world: World) -> None:
    bronze: dict[str, Any] = world.admin.get("/api/v1/tiers/bronze/quota")
    bronze["tenant"].pop("cost_per_month")
    world.admin.put("/api/v1/tiers/bronze/quota", bronze)
    apply_book(world, in_currency("EUR"))
    assert snapshot(world.runtime).quotas.currency == "EUR"


def test_withdrawing_back_to_the_bundled_currency_is_refused_while_budgets_are_set(
    world: World,
) -> None:
    later = in_currency("EUR", "2099-01-01T00:00:00Z")
    apply_book(world, later, keep_budget_amounts=True)
    sessions, number = world.runtime.session_factory, later.versions[0].version
    with pytest.raises(Conflict, match="from EUR to USD"), sessions() as session, session.begin():
        withdraw_price_version(session, number, datetime.now(UTC))
    with sessions() as session:
        assert price_book_currency(session) == "EUR", "refused: the version stays"
