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

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from trunkline.billing.capacity import hold_price_book
from trunkline.billing.periods import month_of
from trunkline.billing.pricebook_store import prices_start
from trunkline.kit.db import chunked
from trunkline.metering.ingest import mark_changed
from trunkline.metering.rollup_plan import HOUR, hour_of
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stamps import CHECKED, misdated
from trunkline.models import ApiKey, BillingPeriod, UsageEvent, UsageRollupWatermark


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
    ``max_ahead_s`` after ``now`` (the ledger keeps no time an event entered the stream: the
    present stands for it, on this process's clock). Holds the price book
    (``hold_price_book``) until the transaction ends, so no first version is applied, and no
    period closed, meanwhile.

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
                reference=now.timestamp(),
                reference_is=CHECKED,
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
    those hours without them (and removes their rows). A key whose last use one of them set
    gets its latest event left's (none: never used)."""
    if not records:
        return
    for ids in chunked(session, [record.request_id for record in records]):
        session.execute(delete(UsageEvent).where(UsageEvent.request_id.in_(ids)))
    mark_changed(
        session,
        {
            (uuid.UUID(r.tenant_id), hour_of(datetime.fromtimestamp(r.started_at, UTC)))
            for r in records
        },
    )
    _last_uses_left(session, records)


def _last_uses_left(session: Session, records: list[UsageRecord]) -> None:
    """Ingest sets a key's last use to its latest event's start (never back): one stamped
    ahead left it in the future for good. Each key whose last use is at or after the latest
    of its events removed gets the latest of those left."""
    removed: dict[tuple[str, str], float] = {}
    for r in records:
        pair = (r.tenant_id, r.key_id)
        removed[pair] = max(removed.get(pair, r.started_at), r.started_at)
    for (tenant_id, key_id), latest_removed in sorted(removed.items()):
        left = session.scalar(
            select(func.max(UsageEvent.started_at))
            .where(UsageEvent.tenant_id == uuid.UUID(tenant_id))
            .where(UsageEvent.api_key_id == key_id)
        )
        # The float of a datetime far ahead (2999) is off by a microsecond or so
        set_by_removed = datetime.fromtimestamp(latest_removed, UTC) - timedelta(milliseconds=1)
        session.execute(
            update(ApiKey)
            .where(ApiKey.key_id == key_id, ApiKey.last_used_at >= set_by_removed)
            .values(last_used_at=left)
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
