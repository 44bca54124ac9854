"""Helpers of the billing tests: the months they bill, their FOCUS exports read back, and every
tenant's invoice made whole, as it was before it was sent a group of tenants at a time."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.charges import ChargeLine
from trunkline.billing.exports import export_period
from trunkline.billing.invoice import render_invoice
from trunkline.billing.periods import Period, parse_period
from trunkline.billing.pricebook_store import load_price_book
from trunkline.billing.statements import statement
from trunkline.kit.db import transaction

NOV, DEC = parse_period("2026-11"), parse_period("2026-12")


def focus(
    factory: sessionmaker[Session], period: str = "2026-11", **kw: object
) -> list[dict[str, str]]:
    with transaction(factory) as session:
        body = export_period(session, parse_period(period), "focus-csv", **kw).body  # type: ignore[arg-type]
    return list(csv.DictReader(io.StringIO(body.decode())))


def billed(rows: list[dict[str, str]], **match: str) -> Decimal:
    selected = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return sum((Decimal(r["BilledCost"]) for r in selected), Decimal(0))


def whole_invoices(session: Session, period: Period, now: datetime | None = None) -> str:
    """Every tenant's invoice made from the month's lines read at once, tenants in slug order."""
    book = load_price_book(session)
    whole = statement(session, period, book, None, now=now)
    by_slug: dict[str, list[ChargeLine]] = defaultdict(list)
    for line in whole.lines:
        by_slug[line.tenant_slug].append(line)
    invoices = [
        render_invoice(by_slug[slug], period, book.currency, final=whole.closed)
        for slug in sorted(by_slug)
    ]
    return "\n".join(invoices) or f"No charges in {period.label}.\n"
