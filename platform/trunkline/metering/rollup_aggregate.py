"""The rollups of some tenant-hours, aggregated from the ledger in one ``SELECT``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, literal, or_, select
from sqlalchemy.orm import Session

from trunkline.metering.outcomes import outcome_column
from trunkline.metering.sql import hour_floor
from trunkline.models import Tier, UsageEvent

Ranges = list[tuple[Any, datetime, datetime]]
"""``(tenant, start, end)``: half-open ranges of whole hours (``rollup_plan.hour_ranges``)."""


def in_ranges(tenant: Any, moment: Any, ranges: Ranges) -> ColumnElement[bool]:
    """``(tenant, moment)`` falls in one of ``ranges``."""
    return or_(*(and_(tenant == t, moment >= a, moment < b) for t, a, b in ranges))


def ledger_rollups(session: Session, ranges: Ranges) -> Select[Any]:
    """One row per rollup key of the events in ``ranges``, its columns in the order of
    ``KEY_COLUMNS`` then ``MEASURE_COLUMNS``."""
    event = UsageEvent
    slos = {name: slo for name, slo in session.execute(select(Tier.name, Tier.ttft_slo_ms))}
    current: ColumnElement[Any] = (
        case(slos, value=event.tier, else_=None) if slos else literal(None)
    )
    # The SLO in force when it was served; the tier's today only for events from before it
    # was recorded: a changed SLO must not rewrite past attainment (and SLA credits) when an
    # hour is rolled up again for a late event.
    slo: ColumnElement[Any] = func.coalesce(event.ttft_slo_ms, current)
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
        outcome_column(event.status).label("outcome"),
    )
    return (
        select(
            *dims,
            func.count().label("requests"),
            func.sum(event.prompt_tokens).label("prompt_tokens"),
            func.sum(event.cached_tokens).label("cached_tokens"),
            func.sum(event.completion_tokens).label("completion_tokens"),
            func.sum(eligible).label("slo_eligible"),
            func.sum(met).label("slo_met"),
        )
        .where(in_ranges(event.tenant_id, event.started_at, ranges))
        .group_by(*dims)
    )
