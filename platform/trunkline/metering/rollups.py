"""The rollup job: recompute the hourly rollups of every tenant-hour whose watermark moved.

Rollups are recomputed from the ledger (never incremented), so running the job twice, or
after a redelivery, changes nothing, and a late event changes only its own hour's rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from trunkline.kit.db import transaction
from trunkline.kit.ids import utcnow
from trunkline.metering.outcomes import outcome_column
from trunkline.metering.rollup_plan import (
    KEY_COLUMNS,
    MEASURE_COLUMNS,
    Measures,
    RollupKey,
    hour_ranges,
    plan_changes,
)
from trunkline.metering.sql import hour_floor
from trunkline.models import Tier, UsageEvent, UsageRollup, UsageRollupWatermark

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RollupRun:
    tenant_hours: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0

    def __add__(self, other: RollupRun) -> RollupRun:
        return RollupRun(
            self.tenant_hours + other.tenant_hours,
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.deleted + other.deleted,
        )


def rollup_usage(
    factory: sessionmaker[Session], *, chunk: int = 500, clock: Callable[[], datetime] = utcnow
) -> RollupRun:
    """Roll up every pending tenant-hour, ``chunk`` of them per transaction."""
    total = RollupRun()
    while True:
        with transaction(factory) as session:
            run = rollup_chunk(session, chunk, clock())
        total += run
        if run.tenant_hours < chunk:
            break
    if total.tenant_hours:
        log.info("usage rolled up", extra=vars_of(total))
    return total


def vars_of(run: RollupRun) -> dict[str, int]:
    return {"tenant_hours": run.tenant_hours, "inserted": run.inserted, "updated": run.updated}


def rollup_chunk(session: Session, limit: int, now: datetime) -> RollupRun:
    mark = UsageRollupWatermark
    marks = session.execute(
        select(mark.tenant_id, mark.hour, mark.changed_seq)
        .where(mark.changed_seq > mark.rolled_seq)
        .order_by(mark.hour, mark.tenant_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not marks:
        return RollupRun()
    ranges = hour_ranges((tenant, hour) for tenant, hour, _seq in marks)
    fresh = _aggregate(session, ranges)
    existing, revisions = _stored(session, ranges)
    plan = plan_changes(existing, fresh)
    _apply(session, plan, revisions, now)
    session.execute(
        update(mark),
        [{"tenant_id": t, "hour": h, "rolled_seq": seq} for t, h, seq in marks],
    )
    return RollupRun(len(marks), len(plan.inserts), len(plan.updates), len(plan.deletes))


def _in_ranges(
    tenant: Any, moment: Any, ranges: list[tuple[Any, datetime, datetime]]
) -> ColumnElement[bool]:
    return or_(*(and_(tenant == t, moment >= a, moment < b) for t, a, b in ranges))


def _aggregate(session: Session, ranges: list[Any]) -> dict[RollupKey, Measures]:
    event = UsageEvent
    slos = {name: slo for name, slo in session.execute(select(Tier.name, Tier.ttft_slo_ms))}
    current: ColumnElement[Any] = (
        case(slos, value=event.tier, else_=None) if slos else literal(None)
    )
    # The SLO in force when it was served; the tier's today only for events from before it
    # was recorded: a changed SLO must not rewrite past attainment (and SLA credits) when an
    # hour is rolled up again for a late event.
    slo: ColumnElement[Any] = func.coalesce(event.ttft_slo_ms, current)
    outcome = outcome_column(event.status)
    # A first token is measured on streams only: a plain answer (embeddings, unstreamed) has
    # no TTFT, so neither its success nor its failure is the SLO's. Counting its failures
    # alone took a tenant of plain requests to 0 % attainment on its first 5xx.
    failed_stream = and_(event.status >= 500, event.stream)
    eligible = case((slo.is_(None), 0), (failed_stream | event.ttft_ms.is_not(None), 1), else_=0)
    met = case((and_(event.status < 500, event.ttft_ms <= slo), 1), else_=0)
    dims = (
        event.tenant_id,
        hour_floor(event.started_at).label("hour"),
        event.project_id,
        event.api_key_id,
        event.model,
        func.coalesce(event.pool, "").label("pool"),
        event.tier,
        func.coalesce(event.region, "").label("region"),
        func.coalesce(event.accelerator, "").label("accelerator"),
        outcome.label("outcome"),
    )
    statement = (
        select(
            *dims,
            func.count(),
            func.sum(event.prompt_tokens),
            func.sum(event.cached_tokens),
            func.sum(event.completion_tokens),
            func.sum(eligible),
            func.sum(met),
        )
        .where(_in_ranges(event.tenant_id, event.started_at, ranges))
        .group_by(*dims)
    )
    fresh: dict[RollupKey, Measures] = {}
    for row in session.execute(statement):
        key: RollupKey = tuple(row[:10])
        fresh[key] = Measures(*(int(v or 0) for v in row[10:]))
    return fresh


def _stored(
    session: Session, ranges: list[Any]
) -> tuple[dict[RollupKey, Measures], dict[RollupKey, int]]:
    columns = [getattr(UsageRollup, name) for name in (*KEY_COLUMNS, *MEASURE_COLUMNS)]
    statement = select(*columns, UsageRollup.revision).where(
        _in_ranges(UsageRollup.tenant_id, UsageRollup.hour, ranges)
    )
    existing: dict[RollupKey, Measures] = {}
    revisions: dict[RollupKey, int] = {}
    for row in session.execute(statement):
        key: RollupKey = tuple(row[:10])
        existing[key] = Measures(*row[10:16])
        revisions[key] = row[16]
    return existing, revisions


def _apply(session: Session, plan: Any, revisions: dict[RollupKey, int], now: datetime) -> None:
    def row(key: RollupKey, measures: Measures, revision: int) -> dict[str, Any]:
        return {
            **dict(zip(KEY_COLUMNS, key, strict=True)),
            **measures.as_dict(),
            "revision": revision,
            "updated_at": now,
        }

    if plan.inserts:
        session.execute(insert(UsageRollup), [row(k, m, 1) for k, m in plan.inserts.items()])
    if plan.updates:
        session.execute(
            update(UsageRollup),
            [row(k, m, revisions[k] + 1) for k, m in plan.updates.items()],
        )
    for key in plan.deletes:
        session.execute(
            delete(UsageRollup).where(
                and_(*(getattr(UsageRollup, c) == v for c, v in zip(KEY_COLUMNS, key, strict=True)))
            )
        )
