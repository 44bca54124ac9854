"""Closing billing periods, and the corrections that late usage makes to closed ones.

Closing a period copies its rollups to ``billed_usage`` and keeps the names of its tenants and
projects: its lines can then be produced again, identically, however late events change the
live rollups and whatever is renamed or deleted. For every earlier closed period
whose rollups moved since it was last reconciled (its watermark: row count and summed
revisions), the difference between its lines now and what was billed (the snapshot plus the
corrections already billed) becomes ``Correction`` lines of the period being closed.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import func, insert, select, union
from sqlalchemy.orm import Session

from trunkline.billing.charges import ChargeLine, LineKey, Names
from trunkline.billing.lines import RollupSource, period_lines
from trunkline.billing.periods import Period, month_of
from trunkline.billing.pricebook import PriceBook
from trunkline.billing.rating import ZERO, exact_difference, exact_sum
from trunkline.billing.scope import TenantScope, in_scope
from trunkline.errors import InvalidRequest
from trunkline.kit.batches import batches
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


def _watermark(session: Session, period: Period) -> tuple[int, int]:
    rows, revisions = session.execute(
        select(func.count(), func.coalesce(func.sum(UsageRollup.revision), 0)).where(
            UsageRollup.hour >= period.start, UsageRollup.hour < period.end
        )
    ).one()
    return int(rows), int(revisions)


def _closed(session: Session, before: Period | None = None) -> list[BillingPeriod]:
    statement = select(BillingPeriod).order_by(BillingPeriod.period_start)
    if before is not None:
        statement = statement.where(BillingPeriod.period_start < before.start)
    return list(session.scalars(statement))


def _totals(lines: Sequence[ChargeLine]) -> dict[LineKey, tuple[ChargeLine, list[Decimal | None]]]:
    fields = ("consumed_quantity", "pricing_quantity", "list_cost", "contracted_cost")
    out: dict[LineKey, tuple[ChargeLine, list[Decimal | None]]] = {}
    for line in lines:
        values = [getattr(line, f) for f in fields]
        if line.key not in out:
            out[line.key] = (line, values)
            continue
        template, totals = out[line.key]
        merged = [
            None if a is None and b is None else exact_sum([a or ZERO, b or ZERO])
            for a, b in zip(totals, values, strict=True)
        ]
        out[line.key] = (template, merged)
    return out


def diff_lines(old: Sequence[ChargeLine], new: Sequence[ChargeLine]) -> list[ChargeLine]:
    """Correction lines that bring what was billed (``old``) to what is due (``new``)."""
    before, after = _totals(old), _totals(new)
    out = []
    for key in sorted(set(before) | set(after), key=str):
        template = (after.get(key) or before[key])[0]
        was = before[key][1] if key in before else [None] * 4
        now = after[key][1] if key in after else [None] * 4
        deltas = [
            None if a is None and b is None else exact_difference(b or ZERO, a or ZERO)
            for a, b in zip(was, now, strict=True)
        ]
        if all(not d for d in deltas):
            continue
        out.append(
            replace(
                template,
                consumed_quantity=deltas[0],
                pricing_quantity=deltas[1],
                list_cost=deltas[2] or ZERO,
                contracted_cost=deltas[3] or ZERO,
                correction=True,
            )
        )
    return out


def stored_corrections(
    session: Session,
    *,
    billed_in: Period | None = None,
    charged_in: Period | None = None,
    tenants: TenantScope = None,
) -> list[ChargeLine]:
    row = BillingCorrection
    statement = select(row.line)
    if billed_in is not None:
        statement = statement.where(row.billed_period_start == billed_in.start)
    if charged_in is not None:
        statement = statement.where(
            row.charge_period_start >= charged_in.start, row.charge_period_start < charged_in.end
        )
    statement = statement.where(in_scope(row.tenant_id, tenants))
    return [msgspec.convert(line, ChargeLine, strict=False) for line in session.scalars(statement)]


def moved_periods(session: Session, before: Period) -> list[BillingPeriod]:
    """The closed periods before ``before`` whose rollups moved since last reconciled."""
    return [
        closed
        for closed in _closed(session, before)
        if _watermark(session, month_of(closed.period_start))
        != (closed.reconciled_rows, closed.reconciled_revisions)
    ]


def pending_corrections(
    session: Session,
    book: PriceBook,
    before: Period,
    tenants: TenantScope = None,
    moved: list[BillingPeriod] | None = None,
) -> list[tuple[BillingPeriod, list[ChargeLine]]]:
    """For each closed period before ``before`` whose rollups moved (``moved``, if the caller
    knows them): its correction lines."""
    out = []
    for closed in moved_periods(session, before) if moved is None else moved:
        period = month_of(closed.period_start)
        now = period_lines(session, UsageRollup, period, book, tenants)
        billed = period_lines(session, BilledUsage, period, book, tenants)
        billed += stored_corrections(session, charged_in=period, tenants=tenants)
        out.append((closed, diff_lines(billed, now)))
    return out


def close_period(session: Session, period: Period, book: PriceBook, now: datetime) -> bool:
    """Close ``period`` (False if it already was): snapshot its rollups, and bill as its
    corrections the changes to earlier closed periods."""
    if period.end > now:
        raise InvalidRequest(f"period {period.label} has not ended yet", param="period")
    if session.get(BillingPeriod, period.start) is not None:
        return False
    for closed, corrections in pending_corrections(session, book, period):
        for line in corrections:
            session.add(
                BillingCorrection(
                    billed_period_start=period.start,
                    tenant_id=line.tenant_id,
                    charge_period_start=line.charge_start,
                    line=msgspec.to_builtins(line),
                )
            )
        closed.reconciled_rows, closed.reconciled_revisions = _watermark(
            session, month_of(closed.period_start)
        )
        closed.reconciled_at = now
    columns = [*KEY_COLUMNS, *MEASURE_COLUMNS]
    source = select(*(getattr(UsageRollup, c) for c in columns)).where(
        UsageRollup.hour >= period.start, UsageRollup.hour < period.end
    )
    session.execute(insert(BilledUsage).from_select(columns, source))
    rows, revisions = _watermark(session, period)
    session.add(
        BillingPeriod(
            period_start=period.start,
            period_end=period.end,
            closed_at=now,
            reconciled_at=now,
            reconciled_rows=rows,
            reconciled_revisions=revisions,
            names=Names.load(session).to_document(),
        )
    )
    session.flush()
    return True


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


def corrected_by(session: Session, period: Period) -> list[BillingPeriod]:
    """The closed periods, of those whose rollups moved, whose corrections the open ``period``
    bills: each is billed by the next period to close after it, and shown in that period's
    preview alone, or summing previews for accruals counts them twice."""
    closed_starts = set(session.scalars(select(BillingPeriod.period_start)))
    return [
        corrected
        for corrected in moved_periods(session, period)
        if _first_open_after(month_of(corrected.period_start), closed_starts) == period
    ]


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
    # A tenant without rows still has a few lines.
    for group in batches(ids, ROWS_PER_STATEMENT, lambda tenant: rows.get(tenant, 0) + 1):
        yield statement(session, period, book, frozenset(group), now=now, corrected=corrected)


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


def _first_open_after(period: Period, closed_starts: set[datetime]) -> Period:
    following = period.next()
    while following.start in closed_starts:
        following = following.next()
    return following


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
