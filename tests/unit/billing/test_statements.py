"""Billing a period: what is billed (cancelled yes, failed no, cached as cached), closing it,
corrections for late events, reproducible re-exports, deleted projects charged back by name
(price versions and the capacity they bill: test_price_versions.py)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from trunkline.auth.principal import Principal
from trunkline.billing import corrections, statements
from trunkline.billing.capacity import add_capacity
from trunkline.billing.charges import ChargeLine
from trunkline.billing.closing import close
from trunkline.billing.periods import parse_period
from trunkline.billing.pricebook_store import (
    load_price_book,
)
from trunkline.kit.db import transaction
from trunkline.metering.rollups import rollup_usage
from trunkline.metering.service import usage_report
from trunkline.models import Project, Tenant, UsageEvent
from trunkline.tenancy.service import delete_project
from unit.billing.billing_support import DEC, NOV, billed, focus
from unit.metering.usage_support import Account, at, event, ingest, mark_changed


def test_cached_tokens_are_priced_as_cached(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    ingest(
        factory,
        [event(tenants["acme"], when=at(3), prompt=1_000_000, cached=400_000, completion=0)],
    )
    rows = focus(factory)
    by_class = {r["x_TokenClass"]: r for r in rows if r["ChargeCategory"] == "Usage"}
    # gold = 1.5 x list: input 0.20 -> 0.30, cached 0.05 -> 0.075 per million
    assert by_class["input"]["ConsumedQuantity"] == "600000"
    assert Decimal(by_class["input"]["BilledCost"]) == Decimal("0.18")
    assert by_class["cached_input"]["ConsumedQuantity"] == "400000"
    assert Decimal(by_class["cached_input"]["ListUnitPrice"]) == Decimal("0.075")
    assert Decimal(by_class["cached_input"]["BilledCost"]) == Decimal("0.03")


def test_a_pending_correction_shows_in_the_preview_of_the_period_that_will_bill_it_alone(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """October closed, November ended and not closed yet, December open: a late October event
    is billed when November closes, so November's preview shows it and December's does not
    (summing the previews for accruals counted it twice)."""
    acme = tenants["acme"]
    october = parse_period("2026-10")
    ingest(factory, [event(acme, when=at(3, month=10))])
    with transaction(factory) as session:
        assert close(session, october, at(2, month=12))
    ingest(factory, [event(acme, when=at(20, month=10), prompt=2_000_000, completion=0)])

    def corrections(period: str) -> list[str]:
        rows = focus(factory, period)
        return [r["ChargePeriodStart"] for r in rows if r["ChargeClass"] == "Correction"]

    assert corrections("2026-11") == ["2026-10-20T10:00:00Z"]
    assert corrections("2026-12") == []
    with transaction(factory) as session:
        assert close(session, NOV, at(2, month=12))
    assert corrections("2026-11") == ["2026-10-20T10:00:00Z"]  # billed there, for good
    assert corrections("2026-12") == []


def test_cancelled_requests_are_billed_and_failed_ones_only_metered(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    acme = tenants["acme"]
    ingest(
        factory,
        [
            event(acme, when=at(3), status=200, prompt=1_000_000, completion=0, stream=True),
            event(acme, when=at(3), status=499, prompt=1_000_000, completion=0, stream=True),
            event(acme, when=at(3), status=502, prompt=1_000_000, completion=0),
        ],
    )
    rows = focus(factory)
    assert billed(rows, x_TokenClass="input") == Decimal("0.6")  # two of three, 0.30 each


def test_late_event_after_export_is_billed_as_a_correction_next_period(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    acme = tenants["acme"]
    ingest(factory, [event(acme, when=at(3), prompt=1_000_000, completion=0)])
    with transaction(factory) as session:
        assert close(session, NOV, at(2, month=12))
    final_nov = focus(factory)
    assert {r["InvoiceId"] for r in final_nov} == {"TL-2026-11-acme"}

    ingest(factory, [event(acme, when=at(29), prompt=2_000_000, completion=0)])  # late

    assert focus(factory) == final_nov  # a closed period reads the same for ever
    december = focus(factory, "2026-12")
    [correction] = [r for r in december if r["ChargeClass"] == "Correction"]
    assert correction["ChargePeriodStart"] == "2026-11-29T10:00:00Z"
    assert correction["BillingPeriodStart"] == "2026-12-01T00:00:00Z"
    assert correction["ConsumedQuantity"] == "2000000"
    assert Decimal(correction["BilledCost"]) == Decimal("0.6")

    with transaction(factory) as session:
        assert close(session, DEC, at(2, month=1, year=2027))
    final_december = focus(factory, "2026-12")
    assert {r["InvoiceId"] for r in final_december} == {"TL-2026-12-acme"}
    assert [{**r, "InvoiceId": ""} for r in final_december] == december  # the preview, final
    assert focus(factory, "2027-01") == []  # and the correction is billed once


def test_an_event_corrected_by_hand_in_a_closed_month_is_billed_as_a_correction(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """November's only request was recorded as failed (not billed) and was answered after all:
    corrected by hand and rolled again, its hour's failed row went and a completed row came,
    the month's rollups kept their count and summed revisions, and no close ever billed it."""
    acme = tenants["acme"]
    ingest(factory, [event(acme, "fixed", when=at(3), status=502, prompt=1_000_000)])
    with transaction(factory) as session:
        assert close(session, NOV, at(2, month=12))
    assert billed(focus(factory)) == 0
    with transaction(factory) as session:
        session.execute(update(UsageEvent).values(status=200))
    mark_changed(factory, at(3))
    rollup_usage(factory)

    december = focus(factory, "2026-12", now=at(2, month=12))
    corrections = [r for r in december if r["ChargeClass"] == "Correction"]
    assert {
        (r["ChargePeriodStart"], r["x_TokenClass"], r["ConsumedQuantity"]) for r in corrections
    } == {
        ("2026-11-03T10:00:00Z", "input", "1000000"),
        ("2026-11-03T10:00:00Z", "output", "100"),
    }
    with transaction(factory) as session:
        assert close(session, DEC, at(2, month=1, year=2027))
    assert [{**r, "InvoiceId": ""} for r in focus(factory, "2026-12")] == december
    assert focus(factory, "2027-01", now=at(2, month=1, year=2027)) == []  # billed once


def test_closing_re_rates_a_corrected_month_a_group_of_tenants_at_a_time(
    factory: sessionmaker[Session], tenants: dict[str, Account], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One late event in closed November made December's close re-rate every tenant's whole
    November at once, twice (as it is and as billed): more than an export of the month holds,
    as an export reads a group of tenants at a time. The corrections it bills are the same."""
    ingest(factory, [event(tenants[s], when=at(3, h)) for s in tenants for h in (1, 2)])
    with transaction(factory) as session:
        assert close(session, NOV, at(2, month=12))
    ingest(factory, [event(tenants[s], when=at(29), completion=9) for s in tenants])  # late
    preview = focus(factory, "2026-12", now=at(2, month=1, year=2027))
    corrected = {r["BillingAccountId"] for r in preview if r["ChargeClass"] == "Correction"}
    assert corrected == {account.tenant_id for account in tenants.values()}

    monkeypatch.setattr(statements, "ROWS_PER_STATEMENT", 1)
    rated = []
    original = corrections.period_lines

    def recorded(*args: object, **kwargs: object) -> list[ChargeLine]:
        rated.append(kwargs.get("tenants", args[4] if len(args) > 4 else None))
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(corrections, "period_lines", recorded)
    with transaction(factory) as session:
        assert close(session, DEC, at(2, month=1, year=2027))
    assert rated and all(group is not None and len(group) == 1 for group in rated)
    monkeypatch.setattr(corrections, "period_lines", original)
    assert [{**r, "InvoiceId": ""} for r in focus(factory, "2026-12")] == preview


def test_a_closed_period_keeps_the_names_it_was_billed_under(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    acme = tenants["acme"]
    ingest(factory, [event(acme, when=at(3), prompt=1_000_000, completion=0)])
    with transaction(factory) as session:
        assert close(session, NOV, at(2, month=12))
    final_nov = focus(factory)
    assert {r["BillingAccountName"] for r in final_nov} != {""}
    assert any("project" in r["Tags"] for r in final_nov)

    with transaction(factory) as session:
        tenant = session.get(Tenant, uuid.UUID(acme.tenant_id))
        project = session.get(Project, uuid.UUID(acme.project_id))
        assert tenant is not None and project is not None
        tenant.name, project.name = "Acme Renamed Ltd", "renamed-project"
    assert focus(factory) == final_nov
    with transaction(factory) as session:
        session.delete(session.get(Project, uuid.UUID(acme.project_id)))
    assert focus(factory) == final_nov


def test_a_project_deleted_before_its_period_closes_is_still_charged_back_by_name(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """Its usage lost its name (SubAccountName empty, no project tag), and the closed period
    kept the loss."""
    acme = tenants["acme"]
    ingest(factory, [event(acme, when=at(3), prompt=1_000_000, completion=0)])
    before = focus(factory)
    with transaction(factory) as session:
        delete_project(session, uuid.UUID(acme.tenant_id), uuid.UUID(acme.project_id))

    assert focus(factory) == before
    assert {r["SubAccountName"] for r in before} == {"demo"}
    with transaction(factory) as session:
        assert close(session, NOV, at(2, month=12))
    assert [{**r, "InvoiceId": ""} for r in focus(factory)] == before
    with transaction(factory) as session:  # the usage API names it as the bill does
        report = usage_report(
            session, Principal.system(), uuid.UUID(acme.tenant_id), "2026-11", "project"
        )
    assert [row.label for row in report.rows] == ["demo"]


def test_dedicated_gpus_of_a_deleted_project_stay_charged_back_to_it(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """Deleting the project emptied its GPU hours' SubAccountId and SubAccountName, in the
    open month and in the final export of a month closed before, which then read otherwise
    than the one finance had (and charged the project's GPUs back to nobody)."""
    acme = tenants["acme"]
    with transaction(factory) as session:
        add_capacity(
            session,
            uuid.UUID(acme.tenant_id),
            "h100",
            1,
            at(30, 22),
            prices=load_price_book(session),
            project_id=uuid.UUID(acme.project_id),
        )
        close(session, NOV, at(2, month=12))
    final_nov = focus(factory)
    open_dec = focus(factory, "2026-12", now=at(1, 2, month=12))
    assert {r["SubAccountName"] for r in final_nov + open_dec} == {"demo"}
    with transaction(factory) as session:
        delete_project(session, uuid.UUID(acme.tenant_id), uuid.UUID(acme.project_id))

    assert focus(factory) == final_nov
    assert focus(factory, "2026-12", now=at(1, 2, month=12)) == open_dec


def test_a_late_event_can_change_the_sla_credit_of_a_closed_period(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    acme = tenants["acme"]
    ingest(factory, [event(acme, when=at(3, minute=m), ttft_ms=100.0) for m in range(19)])
    with transaction(factory) as session:
        close(session, NOV, at(2, month=12))
    assert not [r for r in focus(factory) if r["ChargeCategory"] == "Credit"]
    ingest(factory, [event(acme, when=at(3, minute=30), ttft_ms=5000.0)])  # 19/20 = 95%: ok
    ingest(factory, [event(acme, when=at(3, minute=31), ttft_ms=5000.0)])  # 19/21 < 95%
    credits = [r for r in focus(factory, "2026-12") if r["ChargeCategory"] == "Credit"]
    assert [(r["ChargeClass"], r["x_Tier"]) for r in credits] == [("Correction", "gold")]
    assert Decimal(credits[0]["BilledCost"]) < 0
