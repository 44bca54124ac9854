"""Corrections: what late usage changes in closed billing periods.

A closed period's watermark (its rollups' row count and summed revisions, and its hours' summed
``rolled_seq``) is stored when it is reconciled; when it moved, the difference between the
period's lines now and what was billed (the snapshot plus the corrections already billed)
becomes ``Correction`` lines, billed by the next period to close after it
(``statements.close_period``) and shown in that period's preview.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal

import msgspec
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trunkline.billing.charges import ChargeLine, LineKey
from trunkline.billing.lines import period_lines
from trunkline.billing.periods import Period, month_of
from trunkline.billing.pricebook import PriceBook
from trunkline.billing.rating import ZERO, exact_difference, exact_sum
from trunkline.billing.scope import TenantScope, in_scope
from trunkline.models import (
    BilledUsage,
    BillingCorrection,
    BillingPeriod,
    UsageRollup,
    UsageRollupWatermark,
)

Watermark = tuple[int, int, int]


def watermark(session: Session, period: Period) -> Watermark:
    """The row count and summed revisions of ``period``'s rollups, and the summed
    ``rolled_seq`` of its tenant-hours (each rollup of an hour moves it: a row deleted and
    another inserted, each of revision 1, left the first two as they were), stored when it is
    reconciled (``reconcile``)."""
    rows, revisions = session.execute(
        select(func.count(), func.coalesce(func.sum(UsageRollup.revision), 0)).where(
            UsageRollup.hour >= period.start, UsageRollup.hour < period.end
        )
    ).one()
    w = UsageRollupWatermark
    rolled = session.scalar(
        select(func.coalesce(func.sum(w.rolled_seq), 0)).where(
            w.hour >= period.start, w.hour < period.end
        )
    )
    return int(rows), int(revisions), int(rolled or 0)


def reconcile(closed: BillingPeriod, mark: Watermark) -> None:
    """Store ``mark`` as the watermark ``closed`` was billed at."""
    closed.reconciled_rows, closed.reconciled_revisions, closed.reconciled_seq = mark


def _moved(closed: BillingPeriod, mark: Watermark) -> bool:
    rows, revisions, rolled = mark
    if (rows, revisions) != (closed.reconciled_rows, closed.reconciled_revisions):
        return True
    return closed.reconciled_seq is not None and rolled != closed.reconciled_seq


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
        if _moved(closed, watermark(session, month_of(closed.period_start)))
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


def _first_open_after(period: Period, closed_starts: set[datetime]) -> Period:
    following = period.next()
    while following.start in closed_starts:
        following = following.next()
    return following
