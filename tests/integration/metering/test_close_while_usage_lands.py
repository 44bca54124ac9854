"""A month closing on PostgreSQL while late usage of it is rolled up beside it: the usage is
billed once, in the month's snapshot or as a correction of the next month, never lost between
the two (a close reads the rollups in several statements)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing import statements
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.worker.jobs import JobContext, JobSettings, close_periods
from unit.billing.billing_support import billed, focus
from unit.metering.usage_support import accounts, at, event, ingest, migrated


@pytest.fixture
def factory(postgres_url: str) -> Iterator[sessionmaker[Session]]:
    made = migrated(postgres_url)
    yield made
    made.kw["bind"].dispose()


def test_usage_rolled_up_while_its_month_closes_is_billed_once(
    factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    acme = accounts(factory)["acme"]
    ingest(factory, [event(acme, "on-time", when=at(3), prompt=1_000_000, completion=0)])
    late = event(acme, "late", when=at(30, 23), prompt=2_000_000, completion=0)
    watermark = statements._watermark
    landed = []

    def late_usage_lands_first(session: Session, period: object) -> tuple[int, int]:
        # Between the close's copy of the rollups and its reading of their watermark, a
        # worker ingests and rolls up a late event of the month (and commits).
        if not landed:
            landed.append(ingest(factory, [late]))
        return watermark(session, period)  # type: ignore[arg-type]

    monkeypatch.setattr(statements, "_watermark", late_usage_lands_first)
    settings = JobSettings(close_grace_hours=48)
    ctx = JobContext(factory, InMemoryUsageStream, settings, clock=lambda: at(10, month=12))
    assert close_periods(ctx) == ["2026-11"]
    assert landed == [1]
    monkeypatch.setattr(statements, "_watermark", watermark)

    november = billed(focus(factory, "2026-11"), BillingAccountName="Acme Corporation")
    december = focus(factory, "2026-12", now=at(20, month=12))
    corrections = billed(december, ChargeClass="Correction")
    # acme is gold: input at 0.30 per million. 1M in November's snapshot; the 2M that landed
    # while it closed, as a correction billed in December.
    assert (november, corrections) == (Decimal("0.3"), Decimal("0.6"))
