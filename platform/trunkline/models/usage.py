"""The usage ledger: one row per request, keyed by request id (idempotent ingest)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from trunkline.models.base import Base


class UsageEvent(Base):
    __tablename__ = "usage_events"
    __table_args__ = (Index("ix_usage_events_tenant_started", "tenant_id", "started_at"),)

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[uuid.UUID]
    project_id: Mapped[uuid.UUID]
    api_key_id: Mapped[str] = mapped_column(String(32))
    alias: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    endpoint_kind: Mapped[str] = mapped_column(String(32))
    pool: Mapped[str | None] = mapped_column(String(100))
    endpoint: Mapped[str | None] = mapped_column(String(500))
    region: Mapped[str | None] = mapped_column(String(64))
    accelerator: Mapped[str | None] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(32))
    stream: Mapped[bool]
    status: Mapped[int]
    error_code: Mapped[str | None] = mapped_column(String(64))
    prompt_tokens: Mapped[int]
    cached_tokens: Mapped[int]
    completion_tokens: Mapped[int]
    ttft_ms: Mapped[float | None]
    ttft_slo_ms: Mapped[int | None]
    """The tier's TTFT SLO when the request was served (None: recorded before migration 0011)."""
    latency_ms: Mapped[float]
    started_at: Mapped[datetime]
