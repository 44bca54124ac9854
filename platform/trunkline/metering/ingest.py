"""Drain the usage stream into the ledger, idempotently on request id.

Every write also bumps the rollup watermark of the tenant-hours that received new events (see
``models/metering.py``), in the same transaction, so rollups never miss an event and
redeliveries change nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session, sessionmaker

from trunkline.kit.db import conflict_insert, sqlite_rows_per_insert
from trunkline.metering._ledger_pg import write_usage_pg
from trunkline.metering.rollup_plan import hour_of
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stream import UsageReader
from trunkline.models import ApiKey, UsageEvent, UsageRollupWatermark

_CHUNK = 1000  # rows per INSERT on SQLite, fewer under an older library's cap on bind parameters


def _row(record: UsageRecord) -> dict[str, Any]:
    return {
        "request_id": record.request_id,
        "tenant_id": uuid.UUID(record.tenant_id),
        "project_id": uuid.UUID(record.project_id),
        "api_key_id": record.key_id,
        "alias": record.alias,
        "model": record.model,
        "endpoint_kind": record.endpoint_kind,
        "pool": record.pool,
        "endpoint": record.endpoint,
        "region": record.region,
        "accelerator": record.accelerator,
        "tier": record.tier,
        "stream": record.stream,
        "status": record.status,
        "error_code": record.error_code,
        "prompt_tokens": record.prompt_tokens,
        "cached_tokens": record.cached_tokens,
        "completion_tokens": record.completion_tokens,
        "ttft_ms": record.ttft_ms,
        "ttft_slo_ms": record.ttft_slo_ms,
        "latency_ms": record.latency_ms,
        "started_at": datetime.fromtimestamp(record.started_at, UTC),
    }


def write_usage(session: Session, records: list[UsageRecord]) -> int:
    """Insert records not yet in the ledger, mark their tenant-hours for rollup and touch the
    keys' last use; returns how many were new (redeliveries count 0)."""
    if not records:
        return 0
    if session.get_bind().dialect.name == "postgresql":
        return write_usage_pg(session, records)
    inserted: list[Any] = []
    chunk = sqlite_rows_per_insert(session, len(UsageEvent.__table__.columns), _CHUNK)
    for start in range(0, len(records), chunk):
        rows = [_row(r) for r in records[start : start + chunk]]
        statement = (
            sqlite.insert(UsageEvent)
            .values(rows)
            .on_conflict_do_nothing()
            .returning(UsageEvent.tenant_id, UsageEvent.api_key_id, UsageEvent.started_at)
        )
        inserted.extend(session.execute(statement).all())
    mark_changed(session, {(row[0], hour_of(row[2])) for row in inserted})
    _touch_keys(session, ((row[1], row[2]) for row in inserted))
    return len(inserted)


def mark_changed(session: Session, tenant_hours: set[tuple[uuid.UUID, datetime]]) -> None:
    """Bump the watermark of each (tenant, hour) so the rollup job recomputes it."""
    if not tenant_hours:
        return
    rows = [
        {"tenant_id": tenant, "hour": hour, "changed_seq": 1, "rolled_seq": 0}
        for tenant, hour in sorted(tenant_hours)
    ]
    chunk = len(rows)
    if session.get_bind().dialect.name == "sqlite":
        chunk = sqlite_rows_per_insert(session, len(rows[0]), len(rows))
    for start in range(0, len(rows), chunk):
        statement = conflict_insert(session, UsageRollupWatermark).values(
            rows[start : start + chunk]
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["tenant_id", "hour"],
                set_={"changed_seq": UsageRollupWatermark.changed_seq + 1},
            )
        )


def _touch_keys(session: Session, uses: Iterable[tuple[str, datetime]]) -> None:
    last_use: dict[str, datetime] = {}
    for key_id, when in uses:
        if key_id not in last_use or when > last_use[key_id]:
            last_use[key_id] = when
    for key_id, when in last_use.items():
        session.execute(
            update(ApiKey)
            .where(ApiKey.key_id == key_id)
            .where((ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < when))
            .values(last_used_at=when)
        )


def ingest_once(reader: UsageReader, factory: sessionmaker[Session], max_count: int = 1000) -> int:
    """Move one batch from the stream to the ledger; ack only after commit."""
    batch = reader.read(max_count)
    if not batch:
        return 0
    with factory() as session, session.begin():
        write_usage(session, [record for _id, record in batch])
    reader.ack([message_id for message_id, _record in batch])
    return len(batch)
