"""The per-tenant invoice: readable, one tenant only, and its total equals the FOCUS export."""

from __future__ import annotations

import csv
import io
import uuid
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.invoice import _cents
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
    amounts = [Decimal(line.split()[-1].replace(",", "")) for line in invoice.splitlines()
               if line.startswith("  ") and not line.startswith("  item")
               and "TOTAL DUE" not in line]  # fmt: skip
    assert len(amounts) == 4 and sum(amounts) == due  # the rows add up to what is due


@pytest.mark.parametrize(
    ("amounts", "cents"),
    [
        (["0.006058", "0.006057", "0.000000864"], [1, 0, 0]),  # shown alone: 0.01 + 0.01
        (["0.333333", "0.333333", "0.333334"], [33, 33, 34]),
        (["2.004", "-0.509"], [201, -51]),  # with a credit: 1.495 is due as 1.50
        (["1.25", "0"], [125, 0]),
    ],
)
def test_rows_are_shown_in_cents_that_add_up_to_the_total(
    amounts: list[str], cents: list[int]
) -> None:
    exact = [Decimal(a) for a in amounts]
    total = sum(exact, Decimal(0))
    assert _cents(exact, total) == cents
    assert sum(cents) == int((total / Decimal("0.01")).to_integral_value(ROUND_HALF_EVEN))


def test_a_period_without_charges_says_so(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        body = export_period(session, parse_period("2026-10"), "invoice").body.decode()
    assert body == "No charges in 2026-10.\n"
