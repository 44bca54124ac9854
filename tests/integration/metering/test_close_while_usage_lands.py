"""A month closing on PostgreSQL while late usage of it is rolled up beside it: the usage is
billed once, in the month's snapshot or as a correction of the next month, never lost between
the two (a close reads the rollups in several statements), however the month is closed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.periods import Period, month_of
from trunkline.kit.ids import utcnow
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.worker.jobs import JobContext, JobSettings, close_periods
from unit.billing.billing_support import billed, focus
from unit.controlplane.cp_support import run_cli
from unit.metering.usage_support import accounts, ingest, migrated
from unit.metering.usage_support import event as usage_event

ENDED = month_of(utcnow()).previous()
"""The CLI closes a month that has ended by the clock."""


@pytest.fixture
def factory(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[sessionmaker[Session]]:
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", postgres_url)
    made = migrated(postgres_url)
    yield made
    made.kw["bind"].dispose()


def by_the_worker(factory: sessionmaker[Session], period: Period, _capsys: object) -> None:
    settings = JobSettings(close_grace_hours=0)
    ctx = JobContext(factory, InMemoryUsageStream, settings, clock=lambda: period.end)
    assert close_periods(ctx) == [period.label]


def by_billing_close(_f: object, period: Period, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "billing", "close", "--period", period.label)[0] == 0


def by_export_close(_f: object, period: Period, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["export", "--period", period.label, "--format", "focus-csv", "--close"]
    assert run_cli(capsys, "billing", *args)[0] == 0


@pytest.mark.parametrize("closing", [by_the_worker, by_billing_close, by_export_close])
def test_usage_rolled_up_while_its_month_closes_is_billed_once(
    factory: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
    closing: Callable[..., None],
) -> None:
    acme = accounts(factory)["acme"]
    day = ENDED.start + timedelta(days=2, hours=10)
    ingest(factory, [usage_event(acme, "on-time", when=day, prompt=1_000_000, completion=0)])
    late = usage_event(
        acme, "late", when=ENDED.end - timedelta(hours=1), prompt=2_000_000, completion=0
    )
    landed = []

    def late_usage_lands(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        # Right after the close copied the month's rollups, a worker ingests and rolls up a
        # late event of the month (and commits) before the close goes on.
        if statement.lstrip().startswith("INSERT INTO billed_usage") and not landed:
            landed.append(ingest(factory, [late]))

    # On every engine: the CLI closes through an engine of its own.
    event.listen(Engine, "after_cursor_execute", late_usage_lands)
    try:
        closing(factory, ENDED, capsys)
    finally:
        event.remove(Engine, "after_cursor_execute", late_usage_lands)
    assert landed == [1]

    month = billed(focus(factory, ENDED.label), BillingAccountName="Acme Corporation")
    following = focus(factory, ENDED.next().label, now=ENDED.end + timedelta(days=3))
    corrections = billed(following, ChargeClass="Correction")
    # acme is gold: input at 0.30 per million. 1M in the month's snapshot; the 2M that landed
    # while it closed, as a correction billed in the next month.
    assert (month, corrections) == (Decimal("0.3"), Decimal("0.6"))
