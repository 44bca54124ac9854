"""Closing billing periods as the CLI and the worker do: which ended periods are due, and
closing one with the prices it is billed at on record. What closing stores (the rollups'
snapshot, the corrections of earlier periods) is ``statements.close_period``.

Closing reads rollups, so callers that can (the CLI, the worker) roll usage up first.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trunkline.billing.capacity import hold_price_book
from trunkline.billing.periods import Period, month_of
from trunkline.billing.pricebook_store import load_price_book, record_bundled_prices
from trunkline.billing.statements import close_period
from trunkline.kit.db import one_view
from trunkline.models import BillingPeriod, DedicatedCapacity, PriceBookVersion, UsageRollup


def closing_view(session: Session) -> None:
    """Begin the transaction of a close: call it before the session's first query.

    It sees one view of the database (``kit.db.one_view``): closing copies the rollups, then
    reads their watermark, in separate statements, and in PostgreSQL's default isolation usage
    rolled up between the two was in the watermark and not in the copy, so no later close
    corrected it: it was billed nowhere. And it holds the price book (``hold_price_book``)
    first, so the view has any version applied before, and none is stored inside the period
    before the close commits."""
    one_view(session, read_only=False)
    hold_price_book(session)


def close(session: Session, period: Period, now: datetime) -> bool:
    """Close ``period``, in a transaction begun by ``closing_view``; stores the bundled price
    book first if none was applied, so the prices a closed period was billed at are on
    record."""
    if session.scalar(select(PriceBookVersion.version).limit(1)) is None:
        record_bundled_prices(session)
    return close_period(session, period, load_price_book(session), now)


def due_periods(session: Session, now: datetime, grace: timedelta) -> list[Period]:
    """Ended periods (by ``grace`` at least) not closed yet, oldest first: from the first
    month with usage or capacity (none before the platform had any: a new installation does not
    close the empty month before it, and an empty month closed by hand years back does not
    make every month since due)."""
    latest = month_of(now - grace).previous()
    closed = set(session.scalars(select(BillingPeriod.period_start)))
    starts = [
        session.scalar(select(func.min(UsageRollup.hour))),
        session.scalar(select(func.min(DedicatedCapacity.starts_at))),
    ]
    first = min((start for start in starts if start is not None), default=None)
    if first is None:
        return []
    due, period = [], month_of(first)
    while period.start <= latest.start:
        if period.start not in closed:
            due.append(period)
        period = period.next()
    return due
