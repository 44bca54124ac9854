"""The usage API over a month that a new price book version splits: each hour's usage at the
version in force then, by key and by day, its cost that of the month's token charges in the
FOCUS export. (The report sums a tenant's usage per price version, not per hour: a month of a
tenant with 300 keys was 216,000 rows read into the control plane, 3.4 s and 216 MB.)"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import msgspec

from integration.metering.test_usage_and_export_api import account
from trunkline.billing.pricebook import BUNDLED, PriceBook, TokenPrices, load_price_book_file
from trunkline.billing.pricebook_store import apply_price_book
from trunkline.kit.db import transaction
from unit.billing.billing_support import NOV, billed, focus
from unit.controlplane.cp_support import World
from unit.metering.usage_support import LLAMA, at, event, ingest, ingest_unchecked

T = "/api/v1/tenants"


def _dearer_from_the_fifteenth() -> PriceBook:
    (first,) = load_price_book_file(BUNDLED).versions
    llama = TokenPrices(Decimal("2.00"), Decimal("0.50"), Decimal("6.00"))
    dearer = msgspec.structs.replace(
        first,
        version=2,
        effective_from=NOV.start + timedelta(days=14, hours=10),
        models={**first.models, LLAMA: llama},
    )
    return PriceBook([first, dearer])


def test_usage_is_rated_at_the_version_in_force_in_its_hour(world: World) -> None:
    factory = world.runtime.session_factory
    with transaction(factory) as session:
        apply_price_book(session, _dearer_from_the_fifteenth())
    one = world.create_key("acme-admin", "acme", "demo", name="one")["key"]["key_id"]
    two = world.create_key("acme-admin", "acme", "demo", name="two")["key"]["key_id"]
    first, second = (account(world, "acme", "demo", key, "gold") for key in (one, two))
    million = {"prompt": 1_000_000, "completion": 0}
    ingest(
        factory,
        [
            event(first, when=at(3), **million),
            event(first, when=at(15, hour=9, minute=59), **million),  # the last hour of v1
            event(first, when=at(15, hour=10), **million),  # the first of v2
            event(second, when=at(20), **million),
            event(second, when=at(20), status=500, **million),  # failed: not billed
        ],
    )
    acme = world.tenant("acme")
    api = world.api("acme-admin")
    by_key = api.get(f"{T}/{acme}/usage", params={"period": "2026-11", "group_by": "key"})
    cost = {r["label"]: Decimal(r["cost"]) for r in by_key["rows"]}
    # gold is 1.5 x: 0.20 a million input tokens, then 2.00
    assert cost == {"one": Decimal("0.6") + Decimal("3.0"), "two": Decimal("3.0")}
    assert {r["label"]: r["requests"] for r in by_key["rows"]} == {"one": 3, "two": 2}
    by_day = api.get(f"{T}/{acme}/usage", params={"period": "2026-11", "group_by": "day"})
    assert {r["group"]: Decimal(r["cost"]) for r in by_day["rows"]} == {
        "2026-11-03": Decimal("0.3"),
        "2026-11-15": Decimal("3.3"),
        "2026-11-20": Decimal("3.0"),
    }
    total = Decimal(by_key["total"]["cost"])
    assert total == Decimal(by_day["total"]["cost"]) == Decimal("6.6")
    tokens = billed(focus(factory), BillingAccountId=acme, ChargeCategory="Usage")
    assert total == tokens


def test_cached_tokens_miscounted_past_the_prompt_are_capped_in_their_own_hour(
    world: World,
) -> None:
    """A ledger from before the gateway capped cached tokens at the prompt holds events with
    more; the usage API caps them as the gateway would have, each rollup row's at its prompt,
    not the month's sum (which another hour's uncached prompt absorbed, pricing 1M input
    tokens as cached). The bill keeps them as metered (docs/metering.md)."""
    factory = world.runtime.session_factory
    key = world.create_key("acme-admin", "acme", "demo", name="one")["key"]["key_id"]
    acme_key = account(world, "acme", "demo", key, "gold")
    ingest_unchecked(
        factory,
        [
            event(acme_key, when=at(3), prompt=1_000_000, cached=2_000_000, completion=0),
            event(acme_key, when=at(4), prompt=1_000_000, cached=0, completion=0),
        ],
    )
    acme = world.tenant("acme")
    for group_by in ("model", "key", "day"):
        report = world.api("acme-admin").get(
            f"{T}/{acme}/usage", params={"period": "2026-11", "group_by": group_by}
        )
        # gold 1.5 x: 1M cached at 0.05, 1M input at 0.20
        assert Decimal(report["total"]["cost"]) == Decimal("0.375"), group_by
