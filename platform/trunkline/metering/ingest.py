"""Drain the usage stream into the ledger, idempotently on request id."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stream import UsageReader
from trunkline.models import ApiKey, UsageEvent


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
        "latency_ms": record.latency_ms,
        "started_at": datetime.fromtimestamp(record.started_at, UTC),
    }


def write_usage(session: Session, records: list[UsageRecord]) -> None:
    """Insert records, ignoring ones already in the ledger, and touch keys' last use."""
    if not records:
        return
    rows = [_row(r) for r in records]
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(UsageEvent).values(rows).on_conflict_do_nothing())
    last_use: dict[str, datetime] = {}
    for row in rows:
        key_id, when = row["api_key_id"], row["started_at"]
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
