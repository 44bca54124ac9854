"""A billing period's statement (its charge lines), and closing a period.

Closing a period copies its rollups to ``billed_usage`` and keeps the names of its tenants and
projects: its lines can then be produced again, identically, however late events change the
live rollups and whatever is renamed or deleted. For every earlier closed period whose rollups
moved since it was last reconciled (its watermark: row count and summed revisions of its
rollups, summed ``rolled_seq`` of its hours), the difference between its lines now and what was
billed (the snapshot plus the corrections already billed) becomes ``Correction`` lines of the
period being closed (``corrections``).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import func, insert, select, union
from sqlalchemy.orm import Session

from trunkline.billing.charges import ChargeLine, Names
from trunkline.billing.corrections import (
    corrected_by,
    moved_periods,
    pending_corrections,
    reconcile,
    stored_corrections,
    watermark,
)
from trunkline.billing.lines import RollupSource, period_lines
from trunkline.billing.periods import Period, month_of
from trunkline.billing.pricebook import PriceBook
from trunkline.billing.scope import TenantScope
from trunkline.errors import InvalidRequest
from trunkline.kit.batches import batches
from trunkline.kit.db import chunked
from trunkline.metering.rollup_plan import KEY_COLUMNS, MEASURE_COLUMNS
from trunkline.models import (
    BilledUsage,
    BillingCorrection,
    BillingPeriod,
    DedicatedCapacity,
    Tenant,
    UsageRollup,
)


@dataclass(frozen=True, slots=True)
class Statement:
    period: Period
    closed: bool
    lines: list[ChargeLine]
    """Sorted; corrections (to earlier periods) last within a tenant."""


def close_period(session: Session, period: Period, book: PriceBook, now: datetime) -> bool:
    """Close ``period`` (False if it already was): snapshot its rollups, and bill as its
    corrections the changes to earlier closed periods."""
    if period.end > now:
        raise InvalidRequest(f"period {period.label} has not ended yet", param="period")
    if session.get(BillingPeriod, period.start) is not None:
        return False
    _bill_corrections(session, book, period, now)
    columns = [*KEY_COLUMNS, *MEASURE_COLUMNS]
    source = select(*(getattr(UsageRollup, c) for c in columns)).where(
        UsageRollup.hour >= period.start, UsageRollup.hour < period.end
    )
    session.execute(insert(BilledUsage).from_select(columns, source))
    closing = BillingPeriod(
        period_start=period.start,
        period_end=period.end,
        closed_at=now,
        reconciled_at=now,
        names=Names.load(session).to_document(),
    )
    reconcile(closing, watermark(session, period))
    session.add(closing)
    session.flush()
    return True


def _bill_corrections(session: Session, book: PriceBook, period: Period, now: datetime) -> None:
    """Store, as billed by ``period``, the corrections of every earlier closed period whose
    rollups moved, and mark those reconciled. A group of tenants at a time, as an export
    reads them: a late event re-rated every tenant's whole month at once, twice (as it is
    and as billed), which held more than the export of that month did."""
    ids = sorted(_billable_tenants(session), key=str)
    for closed in moved_periods(session, period):
        earlier = month_of(closed.period_start)
        rows = _rows_by_tenant(session, UsageRollup, earlier)
        rows.update(_rows_by_tenant(session, BilledUsage, earlier))
        for group in _groups(session, ids, rows):
            for _closed, lines in pending_corrections(session, book, period, group, [closed]):
                for line in lines:
                    session.add(
                        BillingCorrection(
                            billed_period_start=period.start,
                            tenant_id=line.tenant_id,
                            charge_period_start=line.charge_start,
                            line=msgspec.to_builtins(line),
                        )
                    )
            session.flush()
        reconcile(closed, watermark(session, earlier))
        closed.reconciled_at = now


def statement(
    session: Session,
    period: Period,
    book: PriceBook,
    tenants: TenantScope = None,
    *,
    now: datetime | None = None,
    corrected: list[BillingPeriod] | None = None,
) -> Statement:
    """The lines of ``period``: final when it is closed, else as they stand ``now`` (with the
    corrections closing it would bill, and the GPU hours begun so far). ``corrected``: the
    ``corrected_by`` it, if the caller knows them."""
    closed_row = session.get(BillingPeriod, period.start)
    closed = closed_row is not None
    if closed_row is not None:
        names = Names.from_document(closed_row.names) if closed_row.names else None
        lines = period_lines(session, BilledUsage, period, book, tenants, names=names)
        lines += stored_corrections(session, billed_in=period, tenants=tenants)
    else:
        lines = period_lines(session, UsageRollup, period, book, tenants, until=now)
        billed_here = corrected_by(session, period) if corrected is None else corrected
        for _corrected, corrections in pending_corrections(
            session, book, period, tenants, billed_here
        ):
            lines += corrections
    lines.sort(key=_order)
    return Statement(period, closed, lines)


ROWS_PER_STATEMENT = 20_000
"""An export of every tenant reads the charge lines of tenants holding about this many rollup
rows at a time (up to three lines a row: about 60 MB of lines), or of one bigger tenant."""


def statements_by_tenants(
    session: Session, period: Period, book: PriceBook, *, now: datetime
) -> Iterator[Statement]:
    """``statement`` of every tenant, a group of tenants at a time (``ROWS_PER_STATEMENT``) in
    the order of their slugs: the lines of every tenant at once held 3 GB for 2.4 million
    lines. Each tenant's lines come in one statement, sorted as ``statement`` sorts them; the
    whole is sorted alike unless a tenant's lines carry two slugs (a slug changed by hand in
    the database after a close: no API or manifest changes one).
    A tenant's rows are those its statement reads: the period's, and those of the closed
    periods it corrects (read twice: as they are and as they were billed), or its stored
    corrections once closed."""
    closed = session.get(BillingPeriod, period.start)
    names = Names.from_document(closed.names) if closed and closed.names else Names.load(session)
    ids = sorted(_billable_tenants(session), key=lambda t: (names.tenant(t)[0], str(t)))
    corrected = [] if closed else corrected_by(session, period)
    rows = _rows_by_tenant(session, BilledUsage if closed else UsageRollup, period)
    for earlier in corrected:
        for source in (UsageRollup, BilledUsage):
            rows.update(_rows_by_tenant(session, source, month_of(earlier.period_start)))
    if closed:
        stored = select(BillingCorrection.tenant_id, func.count()).where(
            BillingCorrection.billed_period_start == period.start
        )
        by_tenant = session.execute(stored.group_by(BillingCorrection.tenant_id))
        rows.update({tenant: count for tenant, count in by_tenant})
    for group in _groups(session, ids, rows):
        yield statement(session, period, book, group, now=now, corrected=corrected)


def _groups(
    session: Session, ids: list[uuid.UUID], rows: Counter[uuid.UUID]
) -> Iterator[frozenset[uuid.UUID]]:
    """``ids`` in order, in groups holding about ``ROWS_PER_STATEMENT`` of their ``rows``, and
    few enough for the ``IN (…)`` each read of a group names them in (``chunked``): up to
    20,000 tenants with little usage made a group, over the 999 bind parameters of a SQLite
    before 3.32, where every export of the month and close correcting it failed."""
    # A tenant without rows still has a few lines.
    for group in batches(ids, ROWS_PER_STATEMENT, lambda tenant: rows.get(tenant, 0) + 1):
        for part in chunked(session, group):
            yield frozenset(part)


def _rows_by_tenant(session: Session, source: RollupSource, period: Period) -> Counter[uuid.UUID]:
    counted = (
        select(source.tenant_id, func.count())
        .where(source.hour >= period.start, source.hour < period.end)
        .group_by(source.tenant_id)
    )
    return Counter({tenant: count for tenant, count in session.execute(counted)})


def _billable_tenants(session: Session) -> set[uuid.UUID]:
    """Every tenant that is, or has anything that could be billed (a deleted tenant's usage)."""
    sources = (Tenant.id, UsageRollup.tenant_id, BilledUsage.tenant_id,
               BillingCorrection.tenant_id, DedicatedCapacity.tenant_id)  # fmt: skip
    return set(session.scalars(union(*(select(column).distinct() for column in sources))))


def _order(line: ChargeLine) -> Any:
    return (
        line.tenant_slug,
        line.correction,
        line.charge_start,
        line.category,
        line.project_name or "",
        line.sku_id,
        line.region or "",
    )
