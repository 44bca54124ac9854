"""The per-tenant invoice: readable, one tenant only, and its total equals the FOCUS export;
every tenant's, made a group of tenants at a time, is the same text as made whole."""

from __future__ import annotations

import csv
import io
import re
import uuid
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing import invoice, statements
from trunkline.billing.capacity import add_capacity
from trunkline.billing.closing import close
from trunkline.billing.exports import export_period
from trunkline.billing.invoice import _cents
from trunkline.billing.periods import parse_period
from trunkline.billing.pricebook import BUNDLED, load_price_book_file
from trunkline.billing.pricebook_store import apply_price_book, load_price_book
from trunkline.kit.db import transaction
from trunkline.models import Project, Tenant, Tier
from unit.billing.billing_support import NOV, whole_invoices
from unit.metering.usage_support import Account, accounts, at, event, ingest


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


def _more_tenants(factory: sessionmaker[Session], slugs: list[str]) -> dict[str, Account]:
    """Tenants beside the examples, each with a project, in the examples' silver tier."""
    with transaction(factory) as session:
        tier = session.scalars(select(Tier).where(Tier.name == "silver")).one()
        for slug in slugs:
            tenant = Tenant(id=uuid.uuid4(), slug=slug, name=slug.title(), tier_id=tier.id)
            session.add(tenant)
            session.flush()  # before its project, which refers to it
            session.add(Project(id=uuid.uuid4(), tenant_id=tenant.id, name="main"))
    return accounts(factory)


def _in_euros(factory: sessionmaker[Session], tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(BUNDLED.read_text().replace("currency: USD", "currency: EUR"))
    with transaction(factory) as session:
        apply_price_book(session, load_price_book_file(path), keep_budget_amounts=True)


BILLED = {  # hooli has no charges; zorg's and globex's late November events are December's
    "2026-11": {"acme", "globex", "initech", "umbrella"},
    "2026-12": {"acme", "globex", "initech", "initrode", "zorg"},
}


@pytest.mark.parametrize("period", ["2026-11", "2026-12"])
def test_the_invoice_of_every_tenant_made_a_group_at_a_time_is_the_whole_one(
    factory: sessionmaker[Session],
    tenants: dict[str, Account],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    period: str,
) -> None:
    """Every tenant's invoice was made from the month's lines held at once. Read a group of
    tenants at a time and sent as it is made, it must be the same text: each tenant's totals,
    the currency, tenants without charges left out, a tenant bigger than a group alone, a
    closed month's corrections in the next."""
    _in_euros(factory, tmp_path)
    tenants = _more_tenants(factory, ["hooli", "initrode", "umbrella", "zorg"])
    busy = [at(day, hour) for day in range(2, 7) for hour in range(6)]  # acme: 30 rollup rows
    ingest(factory, [event(tenants["acme"], when=h, prompt=1_234_567) for h in busy])
    ingest(factory, [event(tenants[s], when=at(3)) for s in ("globex", "initech", "umbrella")])
    with transaction(factory) as session:
        add_capacity(session, uuid.UUID(tenants["initech"].tenant_id), "h100", 2, at(30, 22),
                     prices=load_price_book(session), region="eu-west")  # fmt: skip
        assert close(session, NOV, at(2, month=12))
    late = [event(tenants[s], when=at(29), completion=5_000, ttft_ms=9_000.0)
            for s in ("acme", "globex", "zorg")]  # fmt: skip
    ingest(factory, [*late, event(tenants["initrode"], when=at(2, month=12))])
    now, month = at(6, month=12), parse_period(period)
    with transaction(factory) as session:  # every tenant's lines at once, as it was made
        whole = whole_invoices(session, month, now)
    billed = re.findall(r"Billed to: .* \((\S+)\), account", whole)
    assert billed == sorted(BILLED[period]) and whole.count("TOTAL DUE") == len(billed)
    assert whole.count("Currency: EUR") == len(billed) and "USD" not in whole
    assert ("Corrections to earlier periods" in whole) == (period == "2026-12")

    monkeypatch.setattr(statements, "ROWS_PER_STATEMENT", 3)  # acme alone; others in twos
    monkeypatch.setattr(invoice, "PIECE_CHARS", 1)  # each invoice sent as it is made
    read: list[set[str]] = []
    original = statements.statement

    def counted(*args: object, **kwargs: object) -> statements.Statement:
        made = original(*args, **kwargs)  # type: ignore[arg-type]
        read.append({line.tenant_slug for line in made.lines})
        return made

    monkeypatch.setattr(statements, "statement", counted)
    sent, groups_read = [], []
    with transaction(factory) as session:
        for chunk in export_period(session, month, "invoice", now=now).chunks:
            sent.append(chunk)
            groups_read.append(len(read))
    assert b"".join(sent).decode() == whole
    assert len(read) >= 4 and {"acme"} in read, "groups of tenants; acme alone"
    assert groups_read[0] < len(read), "the first invoice went before the last group was read"


def test_an_invoice_of_every_tenant_without_charges_says_so(
    factory: sessionmaker[Session], tenants: dict[str, Account], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(statements, "ROWS_PER_STATEMENT", 1)  # three groups, none with a line
    with transaction(factory) as session:
        export = export_period(session, parse_period("2026-10"), "invoice")
        assert list(export.chunks) == [b"No charges in 2026-10.\n"]
