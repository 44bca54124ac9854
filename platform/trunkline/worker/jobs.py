"""The periodic jobs, as plain functions of a ``JobContext``, and their schedule: usage ingest,
rollups, and closing (and exporting) billing periods."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.closing import close, closing_view, due_periods
from trunkline.billing.export_file import publish, stage
from trunkline.billing.exports import export_period
from trunkline.billing.periods import Period
from trunkline.kit.db import transaction
from trunkline.kit.ids import utcnow
from trunkline.metering.consumer import UsageConsumer
from trunkline.metering.rollups import rollup_usage
from trunkline.metering.stamps import MAX_AHEAD_S
from trunkline.metering.stream import UsageReader
from trunkline.settings import Port, read_environment

log = logging.getLogger(__name__)


class JobSettings(BaseModel):
    """``TRUNKLINE_JOBS__*``: how often each job runs and how the ingest consumer behaves."""

    ingest_interval_s: float = Field(default=1.0, gt=0)
    ingest_budget_s: float = Field(default=5.0, gt=0)
    """A run drains the stream for at most this long, then leaves the rest to the next."""
    ingest_batch: int = Field(default=5000, ge=1)
    claim_idle_ms: int = Field(default=30_000, ge=1)
    """Messages another consumer left unacked this long are presumed orphaned and claimed."""
    usage_clock_skew_s: float = Field(default=MAX_AHEAD_S, ge=0)
    """A usage event stamped more than this ahead of the time it entered the usage stream (the
    stream's clock; the worker's where the stream does not say) is set aside in the dead-letter
    stream, not billed (the gateway's clock is ahead)."""
    rollup_interval_s: float = Field(default=30.0, gt=0)
    close_interval_s: float = Field(default=3600.0, gt=0)
    close_grace_hours: float = Field(default=72.0, ge=0)
    """A month is closed this long after it ended, so late events land in it first."""
    export_dir: Path | None = None
    """Where a closed month's FOCUS CSV and Parquet (every tenant) are written, if set."""
    metrics_port: Port | None = None
    """``trunkline worker`` serves its Prometheus metrics (``/metrics``) on this port, if set:
    events ingested, the stream's backlog, when the stream and the ledger last answered."""
    metrics_host: str = "127.0.0.1"
    """Where the worker's metrics listen (``0.0.0.0`` in a pod scraped from outside)."""


class _JobEnvironment(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TRUNKLINE_", env_nested_delimiter="__", extra="ignore"
    )
    jobs: JobSettings = Field(default_factory=JobSettings)


def load_job_settings() -> JobSettings:
    """``TRUNKLINE_JOBS__*`` from the environment (composition roots only)."""
    return read_environment(_JobEnvironment).jobs


@dataclass
class JobContext:
    factory: sessionmaker[Session]
    reader: Callable[[], UsageReader]
    settings: JobSettings
    clock: Callable[[], datetime] = utcnow


def ingest_usage(ctx: JobContext) -> int:
    """Drain the usage stream into the ledger (within the run's time budget)."""
    consumer = UsageConsumer(
        ctx.reader(),
        ctx.factory,
        batch_size=ctx.settings.ingest_batch,
        retry_max_s=1.0,
        clock=lambda: ctx.clock().timestamp(),
        max_ahead_s=ctx.settings.usage_clock_skew_s,
    )
    return consumer.drain(ctx.settings.ingest_budget_s)


def rollup(ctx: JobContext) -> int:
    """Recompute the rollups of every tenant-hour that received events."""
    return rollup_usage(ctx.factory, clock=ctx.clock).tenant_hours


def close_periods(ctx: JobContext) -> list[str]:
    """Close every month that ended more than the grace period ago, and write its FOCUS files
    (if ``export_dir`` is set): they appear once the close committed, never before. Written
    under their names inside the transaction, a file marked final (invoice ids) stayed when
    the close failed after it and rolled back, for a month still open."""
    now = ctx.clock()
    with transaction(ctx.factory) as session:
        periods = due_periods(session, now, timedelta(hours=ctx.settings.close_grace_hours))
    if not periods:
        return []
    rollup_usage(ctx.factory, clock=ctx.clock)
    closed = []
    for period in periods:
        staged: list[tuple[Path, Path]] = []
        try:
            with transaction(ctx.factory) as session:
                closing_view(session)
                if close(session, period, now):
                    staged = _export(session, period, ctx.settings.export_dir)
                    closed.append(period.label)
            for partial, path in staged:
                publish(partial, path)
        finally:
            for partial, _path in staged:
                partial.unlink(missing_ok=True)
    log.info("billing periods closed", extra={"periods": ",".join(closed)})
    return closed


def _export(session: Session, period: Period, export_dir: Path | None) -> list[tuple[Path, Path]]:
    """The closed month's FOCUS files for finance, if a directory is configured: each written
    beside its path as it is made (a month of every tenant is not held whole), to rename once
    the close committed; (written, path) pairs."""
    if export_dir is None:
        return []
    staged: list[tuple[Path, Path]] = []
    try:
        for fmt in ("focus-csv", "focus-parquet"):
            export = export_period(session, period, fmt)
            path = export_dir / export.filename
            staged.append((stage(path, export.chunks), path))
    except BaseException:
        for partial, _path in staged:
            partial.unlink(missing_ok=True)
        raise
    return staged


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[JobContext], Any]
    interval: Callable[[JobSettings], float]


JOBS = (
    Job("metering.ingest_usage", ingest_usage, lambda s: s.ingest_interval_s),
    Job("metering.rollup_usage", rollup, lambda s: s.rollup_interval_s),
    Job("billing.close_periods", close_periods, lambda s: s.close_interval_s),
)
