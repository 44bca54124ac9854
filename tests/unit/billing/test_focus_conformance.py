"""FOCUS 1.2 rules a FinOps analyst relies on, beyond column types and nullability
(``test_focus.py``): identifiers that stay the same over time, tag keys, and a CSV that a
spreadsheet opens as data.

The rules are read from the FOCUS 1.2 column and attribute definitions, not from our code."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.pricebook import PriceBook, version_from_document
from trunkline.billing.pricebook_store import apply_price_book
from trunkline.kit.db import transaction
from unit.billing.billing_support import focus
from unit.metering.usage_support import Account, at, event, ingest


def _two_prices(input_price: str, later_price: str) -> PriceBook:
    def version(number: int, starts: str, price: str) -> dict[str, object]:
        models = {"*": {"input": price, "cached_input": price, "output": price}}
        return {"version": number, "effective_from": starts, "models": models}

    return PriceBook(
        [
            version_from_document(version(1, "2026-01-01T00:00:00Z", input_price)),
            version_from_document(version(2, "2026-11-15T00:00:00Z", later_price)),
        ]
    )


def test_a_sku_price_keeps_its_id_when_its_price_changes(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """SkuPriceId "MUST remain consistent over time": an analyst follows a price's changes
    by filtering on it. It carried the price book version, so each new version gave every
    SKU a new price id, and a month with a price change showed two prices of one SKU as two
    unrelated ones."""
    with transaction(factory) as session:
        apply_price_book(session, _two_prices("1", "2"))
    initech = tenants["initech"]
    ingest(
        factory,
        [
            event(initech, when=at(14, 23), prompt=1_000_000, completion=0),
            event(initech, when=at(15, 0), prompt=1_000_000, completion=0),
        ],
    )
    rows = focus(factory)
    assert len(rows) == 2 and len({r["SkuId"] for r in rows}) == 1
    assert {Decimal(r["ListUnitPrice"]) for r in rows} == {Decimal(1), Decimal(2)}
    assert len({r["SkuPriceId"] for r in rows}) == 1
    assert {r["x_PriceBookVersion"] for r in rows} == {"1", "2"}
