"""Helpers for metering and billing tests (no fixtures here): a migrated database with the
example tenants of ``tenants/``, usage events for them, and ingest through the real consumer."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import event as sa_event
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from trunkline.kit.db import make_engine, make_sessionmaker, transaction
from trunkline.kit.migrate import upgrade
from trunkline.metering.consumer import UsageConsumer
from trunkline.metering.ingest import write_usage
from trunkline.metering.rollups import rollup_usage
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.models import Project, Tenant, UsageRollupWatermark
from trunkline.tenancy.manifests import apply_manifests

TENANTS_DIR = Path(__file__).resolve().parents[3] / "tenants"
LLAMA = "llama-3.1-8b-instruct"


@dataclass(frozen=True)
class Account:
    tenant_id: str
    project_id: str
    tier: str
    key_id: str


def at(day: int, hour: int = 10, minute: int = 0, month: int = 11, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def migrated(url: str) -> sessionmaker[Session]:
    """Migrate ``url`` and apply ``tenants/`` (acme gold, globex silver, initech bronze)."""
    upgrade(url)
    factory = make_sessionmaker(make_engine(url))
    apply_manifests(factory, TENANTS_DIR)
    return factory


def accounts(factory: sessionmaker[Session]) -> dict[str, Account]:
    """slug -> the tenant's first project, tier and a made-up key id."""
    with transaction(factory) as session:
        out = {}
        for tenant in session.scalars(select(Tenant)):
            project = session.scalars(select(Project).where(Project.tenant_id == tenant.id)).first()
            assert project is not None
            key = (tenant.slug + "key").ljust(12, "0")[:12]
            out[tenant.slug] = Account(str(tenant.id), str(project.id), tenant.tier.name, key)
        return out


def event(
    account: Account,
    request_id: str | None = None,
    *,
    when: datetime,
    status: int = 200,
    prompt: int = 1000,
    cached: int = 0,
    completion: int = 100,
    ttft_ms: float | None = 100.0,
    model: str = LLAMA,
    stream: bool = False,
    ttft_slo_ms: int | None = None,
) -> UsageRecord:
    return UsageRecord(
        request_id=request_id or f"req-{uuid.uuid4().hex}",
        tenant_id=account.tenant_id,
        project_id=account.project_id,
        key_id=account.key_id,
        alias=model,
        model=model,
        endpoint_kind="chat",
        tier=account.tier,
        stream=stream,
        status=status,
        error_code=None if status == 200 else "error",
        pool="h100-eu-west",
        endpoint="http://engine-1",
        region="eu-west",
        accelerator="h100",
        prompt_tokens=prompt,
        cached_tokens=cached,
        completion_tokens=completion,
        ttft_ms=ttft_ms,
        latency_ms=1000.0,
        started_at=when.timestamp(),
        ttft_slo_ms=ttft_slo_ms,
    )


def ingest(
    factory: sessionmaker[Session], events: list[UsageRecord], *, rollup: bool = True
) -> int:
    """Through the in-memory stream and the real consumer, then the rollup job; every event.
    (With a claim timeout of 0, the consumer's read-ahead claimed the batch it was writing,
    found it its own, and took the stream for empty: past 5000 events, the rest were left.)"""
    stream = InMemoryUsageStream(claim_idle_s=3600)
    for item in events:
        stream.emit(item)
    moved = UsageConsumer(stream, factory).drain()
    assert moved == len(events) and not len(stream), (moved, len(events))
    assert not stream.dead, stream.dead
    if rollup:
        rollup_usage(factory)
    return moved


def mark_changed(factory: sessionmaker[Session], hour: datetime) -> None:
    """What an operator does after correcting the ledger by hand: the hour is rolled again."""
    watermark = UsageRollupWatermark
    with transaction(factory) as session:
        session.execute(
            update(watermark)
            .where(watermark.hour == hour)
            .values(changed_seq=watermark.changed_seq + 1)
        )


def ingest_unchecked(factory: sessionmaker[Session], events: list[UsageRecord]) -> None:
    """Into the ledger as they are, then rolled up: usage ingest would set aside an event
    stamped before the first price book version, but a ledger can hold one still (written
    before ingest checked, or before a first version was applied that starts after it)."""
    with transaction(factory) as session:
        write_usage(session, events)
    rollup_usage(factory)


def a_month_of_usage(factory: sessionmaker[Session]) -> None:
    """An event an hour for each tenant through November 2026, ingested and rolled up: its
    FOCUS CSV export of every tenant is a few MB."""
    ingest(
        factory,
        [
            event(account, when=at(day, hour))
            for account in accounts(factory).values()
            for day in range(1, 31)
            for hour in range(24)
        ],
    )


OLD_SQLITE_CAP = 999
"""Bind parameters per statement of a SQLite library built with the default before 3.32."""


@contextlib.contextmanager
def old_sqlite(url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on ``url`` as a SQLite library capped at ``OLD_SQLITE_CAP`` bind parameters
    per statement runs them (``kit.db`` allows for such a cap everywhere)."""
    engine = make_engine(url)

    @sa_event.listens_for(engine, "connect", insert=True)  # first, as the library's own cap
    def cap(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, OLD_SQLITE_CAP)

    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()
