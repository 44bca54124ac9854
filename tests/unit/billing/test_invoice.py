"""The per-tenant invoice: readable, one tenant only, and its total equals the FOCUS export."""

from __future__ import annotations

import csv
import io
import uuid
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.periods import parse_period
from trunkline.billing.service import close, export_period
from trunkline.kit.db import transaction
from unit.metering.usage_support import Account, at, event, ingest


def test_invoice_total_equals_the_focus_billed_cost(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    ingest(
        factory,
        [
            event(
                acme,
                when=at(d),
                prompt=123_457 * d,
                cached=1000 * d,
                completion=9_999 * d,
                ttft_ms=100.0 if d % 3 else 900.0,
            )
            for d in range(1, 29)
        ]
        + [event(globex, when=at(2))],
    )
    period = parse_period("2026-11")
    acme_id = uuid.UUID(acme.tenant_id)
    with transaction(factory) as session:
        close(session, period, at(2, month=12))
        invoice = export_period(session, period, "invoice", acme_id).body.decode()
        focus = export_period(session, period, "focus-csv", acme_id).body.decode()
    rows = list(csv.DictReader(io.StringIO(focus)))
    total = sum((Decimal(r["BilledCost"]) for r in rows), Decimal(0))
    due = total.quantize(Decimal("0.01"), ROUND_HALF_EVEN)
    assert f"TOTAL DUE{'':<75}{due:>16,.2f} USD".replace(" ", "") in invoice.replace(" ", "")
    assert "INVOICE TL-2026-11-acme" in invoice
    assert "Acme Corporation" in invoice and "Globex" not in invoice
    assert "SLA credits" in invoice and "cached input" in invoice
    assert "Status: FINAL" in invoice


def test_a_period_without_charges_says_so(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        body = export_period(session, parse_period("2026-10"), "invoice").body.decode()
    assert body == "No charges in 2026-10.\n"
