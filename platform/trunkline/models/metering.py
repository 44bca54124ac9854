"""Hourly usage rollups and the watermarks that say which tenant-hours need rolling up again.

The ledger (``usage_events``) is append-only and idempotent on request id. Ingest bumps
``changed_seq`` of every (tenant, hour) that received new events, in the same transaction as
the events; the rollup job recomputes exactly those tenant-hours from the ledger and records
the ``changed_seq`` it has seen as ``rolled_seq``. A rerun finds nothing to do; a late event
marks its own (old) hour again.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from trunkline.models.base import Base


class UsageRollupWatermark(Base):
    __tablename__ = "usage_rollup_watermarks"
    __table_args__ = (
        # partial: the rollup job reads only tenant-hours it has not caught up with
        Index(
            "ix_usage_rollup_watermarks_pending",
            "hour",
            postgresql_where=text("changed_seq > rolled_seq"),
            sqlite_where=text("changed_seq > rolled_seq"),
        ),
        # a closed billing period's watermark sums its hours' rolled_seq (billing/corrections)
        Index("ix_usage_rollup_watermarks_hour", "hour"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    changed_seq: Mapped[int] = mapped_column(BigInteger, default=1)
    """Bumped by every ingest transaction that added events of this tenant and hour."""
    rolled_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    """The ``changed_seq`` the rollups of this tenant and hour were last computed at."""


class RollupColumns:
    """Dimensions and measures shared by the live rollups and the billed snapshot of them.

    Dimensions never hold NULL (``''`` stands for "none") so they can be part of a key.
    """

    tenant_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    project_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    api_key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    pool: Mapped[str] = mapped_column(String(100), primary_key=True)
    tier: Mapped[str] = mapped_column(String(32), primary_key=True)
    region: Mapped[str] = mapped_column(String(64), primary_key=True)
    accelerator: Mapped[str] = mapped_column(String(64), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    """``completed`` (2xx), ``cancelled`` (client gone), ``rejected`` (4xx), ``failed`` (5xx)."""
    requests: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    """All prompt tokens, cached ones included (OpenAI's ``prompt_tokens``)."""
    cached_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    slo_eligible: Mapped[int] = mapped_column(BigInteger)
    """Requests that count towards TTFT attainment (a first token, or a server-side failure)."""
    slo_met: Mapped[int] = mapped_column(BigInteger)
    """Of those, requests whose TTFT was within their tier's SLO."""


class UsageRollup(RollupColumns, Base):
    __tablename__ = "usage_rollups"
    __table_args__ = (Index("ix_usage_rollups_hour", "hour"),)

    revision: Mapped[int] = mapped_column(default=1)
    """Incremented each time a recomputation changed this row's measures."""
    updated_at: Mapped[datetime]
