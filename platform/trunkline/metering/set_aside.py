"""The events the ledger holds that ingest would set aside now (``stamps.misdated``): stamped
by a gateway's wrong clock before ingest checked. One stamped before the first price book
version stopped every billing close, and no first version could be applied after it; taking
them out (``trunkline billing set-aside-misdated``) lets closes go on. Those of a period
closed already are left: billed there. They are kept where
ingest keeps what it sets aside, with the reason, and their hours are rolled up again without
them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from trunkline.billing.capacity import hold_price_book
from trunkline.billing.periods import month_of
from trunkline.billing.pricebook_store import prices_start
from trunkline.metering.ingest import mark_changed
from trunkline.metering.rollup_plan import HOUR, hour_of
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stamps import misdated
from trunkline.models import BillingPeriod, UsageEvent, UsageRollupWatermark


@dataclass
class MisdatedUsage:
    """The ledger's misdated events: those to set aside, and those left where they are."""

    open: list[tuple[UsageRecord, str]] = field(default_factory=list)
    """In periods not closed yet, with why they are misdated."""
    billed: list[tuple[UsageRecord, str]] = field(default_factory=list)
    """In closed periods, with the period: billed there (its snapshot holds them), so taken
    out, the next close would re-rate that period, and one before the first price book
    version cannot be rated: every close would fail on it."""


def misdated_in_ledger(session: Session, now: datetime, max_ahead_s: float) -> MisdatedUsage:
    """The ledger's events stamped before the first price book version, or more than
    ``max_ahead_s`` after ``now``. Holds the price book (``hold_price_book``) until the
    transaction ends, so no first version is applied, and no period closed, meanwhile.

    Found through the hours' watermarks (every hour with events has one) and read an hour of a
    tenant at a time by ``ix_usage_events_tenant_started``: the ledger is not scanned whole."""
    hold_price_book(session)
    priced_from = prices_start(session)
    closed = set(session.scalars(select(BillingPeriod.period_start)))
    hours = session.execute(
        select(UsageRollupWatermark.tenant_id, UsageRollupWatermark.hour)
        .where(
            or_(
                UsageRollupWatermark.hour < priced_from,
                UsageRollupWatermark.hour >= hour_of(now + timedelta(seconds=max_ahead_s)),
            )
        )
        .order_by(UsageRollupWatermark.hour, UsageRollupWatermark.tenant_id)
    ).all()
    found = MisdatedUsage()
    for tenant_id, hour in hours:
        rows = session.scalars(
            select(UsageEvent)
            .where(UsageEvent.tenant_id == tenant_id)
            .where(UsageEvent.started_at >= hour, UsageEvent.started_at < hour + HOUR)
            .order_by(UsageEvent.started_at, UsageEvent.request_id)
        )
        period = month_of(hour)
        for row in rows:
            record = record_of(row)
            why = misdated(
                record.started_at,
                priced_from=priced_from,
                now=now.timestamp(),
                max_ahead_s=max_ahead_s,
            )
            if why is None:
                continue
            if period.start in closed:
                found.billed.append((record, period.label))
            else:
                found.open.append((record, why))
    return found


def remove_from_ledger(session: Session, records: list[UsageRecord]) -> None:
    """Delete these events and mark their tenant-hours changed: the next rollup recomputes
    those hours without them (and removes their rows)."""
    if not records:
        return
    ids = [record.request_id for record in records]
    for start in range(0, len(ids), 1000):  # SQLite's bound-parameter limit
        session.execute(
            delete(UsageEvent).where(UsageEvent.request_id.in_(ids[start : start + 1000]))
        )
    mark_changed(
        session,
        {
            (uuid.UUID(r.tenant_id), hour_of(datetime.fromtimestamp(r.started_at, UTC)))
            for r in records
        },
    )


def record_of(row: UsageEvent) -> UsageRecord:
    """The event as the gateway sent it (the inverse of ingest's row)."""
    return UsageRecord(
        request_id=row.request_id,
        tenant_id=str(row.tenant_id),
        project_id=str(row.project_id),
        key_id=row.api_key_id,
        alias=row.alias,
        model=row.model,
        endpoint_kind=row.endpoint_kind,
        tier=row.tier,
        stream=row.stream,
        status=row.status,
        error_code=row.error_code,
        pool=row.pool,
        endpoint=row.endpoint,
        region=row.region,
        accelerator=row.accelerator,
        prompt_tokens=row.prompt_tokens,
        cached_tokens=row.cached_tokens,
        completion_tokens=row.completion_tokens,
        ttft_ms=row.ttft_ms,
        latency_ms=row.latency_ms,
        started_at=row.started_at.timestamp(),
        ttft_slo_ms=row.ttft_slo_ms,
    )
