"""The worker's jobs are plain functions: the embedded mode runs them in-process over the
in-memory stream and SQLite, on the schedule Celery beat would follow."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.closing import close
from trunkline.billing.periods import parse_period
from trunkline.errors import InvalidRequest
from trunkline.kit.db import transaction
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.models import BillingPeriod, UsageEvent, UsageRollup
from trunkline.worker.inprocess import drain, run_jobs
from trunkline.worker.jobs import JobContext, JobSettings, close_periods
from unit.metering.usage_support import Account, at, event


def context(factory: sessionmaker[Session], stream: InMemoryUsageStream) -> JobContext:
    settings = JobSettings(ingest_interval_s=0.01, rollup_interval_s=0.01, close_grace_hours=48)
    return JobContext(factory, lambda: stream, settings, clock=lambda: at(10, month=12))


def totals(factory: sessionmaker[Session]) -> tuple[int, int]:
    with factory() as session:
        events = session.scalar(select(func.count()).select_from(UsageEvent)) or 0
        rolled = session.scalar(select(func.coalesce(func.sum(UsageRollup.requests), 0))) or 0
    return int(events), int(rolled)


async def test_in_process_jobs_ingest_and_roll_up(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    stream = InMemoryUsageStream(claim_idle_s=1)
    for n in range(50):
        stream.emit(event(tenants["acme"], f"e{n}", when=at(3, n % 24)))
    jobs = asyncio.create_task(run_jobs(context(factory, stream)))
    try:
        for _ in range(400):
            if totals(factory) == (50, 50):
                break
            await asyncio.sleep(0.02)
    finally:
        jobs.cancel()
    assert totals(factory) == (50, 50)


def test_shutdown_drains_what_is_left(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    stream = InMemoryUsageStream(claim_idle_s=1)
    stream.emit(event(tenants["acme"], "last", when=at(3)))
    drain(context(factory, stream))
    assert totals(factory) == (1, 1)


def test_shutdown_drains_a_backlog_longer_than_one_run_s_budget(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    # Each run's budget is spent before its next batch: the batch it had read ahead stayed
    # pending, unclaimable for claim_idle_s, the run said it moved nothing, and the shutdown
    # drain stopped there. The embedded stream dies with its process: those events were lost.
    stream = InMemoryUsageStream(claim_idle_s=1)
    for n in range(7):
        stream.emit(event(tenants["acme"], f"e{n}", when=at(3)))
    ctx = context(factory, stream)
    ctx.settings.ingest_batch = 2
    ctx.settings.ingest_budget_s = 1e-9
    drain(ctx)
    assert totals(factory) == (7, 7)
    assert len(stream) == 0


def test_months_close_once_their_grace_period_is_over_and_are_exported(
    factory: sessionmaker[Session], tenants: dict[str, Account], tmp_path: Path
) -> None:
    stream = InMemoryUsageStream()
    stream.emit(event(tenants["acme"], "nov", when=at(30, 23)))
    ctx = context(factory, stream)
    ctx.settings.export_dir = tmp_path / "finance"
    drain(ctx)
    assert close_periods(ctx) == ["2026-11"]  # ended Dec 1, grace 48 h, now Dec 10
    assert close_periods(ctx) == []
    assert sorted(p.name for p in ctx.settings.export_dir.iterdir()) == [
        "trunkline-focus-csv-2026-11-all.csv",
        "trunkline-focus-parquet-2026-11-all.parquet",
    ]
    with factory() as session:
        closed = session.scalars(select(BillingPeriod.period_start)).all()
    assert closed == [parse_period("2026-11").start]


def test_every_ended_month_with_usage_closes_not_only_the_latest(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    # Usage since September, and the close job's first run in December: September and
    # October must close too, not stay preliminary (no invoice) for ever behind November.
    stream = InMemoryUsageStream()
    for month in (9, 10, 11):
        stream.emit(event(tenants["acme"], f"m{month}", when=at(5, month=month)))
    ctx = context(factory, stream)
    drain(ctx)
    assert close_periods(ctx) == ["2026-09", "2026-10", "2026-11"]
    assert close_periods(ctx) == []


def test_a_new_installation_closes_no_empty_month_before_it(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    # Nothing used yet: closing November would only refuse November price versions and
    # capacity afterwards, for a month the platform never served.
    ctx = context(factory, InMemoryUsageStream())
    assert close_periods(ctx) == []
    with factory() as session:
        assert session.scalars(select(BillingPeriod.period_start)).all() == []


def test_an_empty_month_closed_by_hand_years_back_makes_no_month_since_due(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    with transaction(factory) as session:
        close(session, parse_period("2020-01"), at(1, month=12))
    stream = InMemoryUsageStream()
    stream.emit(event(tenants["acme"], "nov", when=at(5, month=11)))
    ctx = context(factory, stream)
    drain(ctx)
    assert close_periods(ctx) == ["2026-11"]  # not every month from 2020-02 on


def test_a_month_whose_export_cannot_be_written_stays_open_and_leaves_no_final_file(
    factory: sessionmaker[Session], tenants: dict[str, Account], tmp_path: Path
) -> None:
    stream = InMemoryUsageStream()
    stream.emit(event(tenants["acme"], "nov", when=at(30, 23)))
    ctx = context(factory, stream)
    finance = ctx.settings.export_dir = tmp_path / "finance"
    finance.mkdir()
    drain(ctx)
    # The disk is full by the time the Parquet file is written (after the CSV): whatever
    # name it is written under first is a full device.
    parquet = "trunkline-focus-parquet-2026-11-all.parquet"
    full = [finance / parquet, finance / f"{parquet}.partial"]
    for name in full:
        name.symlink_to("/dev/full")
    with pytest.raises((OSError, InvalidRequest)):
        close_periods(ctx)
    # The close rolled back: no CSV saying final (invoice ids) for a month still open.
    assert [p.name for p in finance.iterdir() if not p.is_symlink()] == []
    with factory() as session:
        assert session.scalars(select(BillingPeriod.period_start)).all() == []
    for name in full:
        name.unlink(missing_ok=True)
    assert close_periods(ctx) == ["2026-11"]  # the next run closes it, files and all
    assert "TL-2026-11-acme" in (finance / "trunkline-focus-csv-2026-11-all.csv").read_text()
    assert len(list(finance.iterdir())) == 2
