"""Price book versions, closed billing periods, the usage they billed, corrections, and
dedicated GPU capacity.

A billing period (a calendar month, UTC) is *closed* once: the rollups of that month are
copied to ``billed_usage``, so the period's lines can be produced again, identically, for
ever. Usage that changes a closed period afterwards (a late event) is billed as FOCUS
``Correction`` lines in the period open at the time, recorded in ``billing_corrections``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from trunkline.models.base import Base, CreatedMixin, IdMixin
from trunkline.models.metering import RollupColumns


class PriceBookVersion(CreatedMixin, Base):
    __tablename__ = "price_book_versions"

    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    effective_from: Mapped[datetime] = mapped_column(unique=True)
    currency: Mapped[str] = mapped_column(String(3))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The version as written in the price book file (prices as decimal strings)."""


class BillingPeriod(Base):
    __tablename__ = "billing_periods"

    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    period_end: Mapped[datetime]
    closed_at: Mapped[datetime]
    reconciled_at: Mapped[datetime]
    """When corrections for this period were last recorded."""
    reconciled_rows: Mapped[int] = mapped_column(BigInteger)
    reconciled_revisions: Mapped[int] = mapped_column(BigInteger)
    """Count and summed revisions of the period's rollups when corrections were last recorded:
    with ``reconciled_seq``, the period's watermark."""
    reconciled_seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """The summed ``rolled_seq`` of the period's tenant-hours then: every rollup of an hour
    moves it, where a row gone and another come (an event corrected by hand from failed to
    completed) left the count and summed revisions as they were. Null: closed before it was
    kept, and not reconciled since."""
    names: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """Tenant slugs and names and project names when the period closed, so renaming or deleting
    one later does not change its lines (null: closed before they were kept; names are read
    as they are now)."""


class BilledUsage(RollupColumns, Base):
    """The rollups of a closed period as they were when it closed."""

    __tablename__ = "billed_usage"
    __table_args__ = (Index("ix_billed_usage_hour", "hour"),)


class BillingCorrection(IdMixin, CreatedMixin, Base):
    __tablename__ = "billing_corrections"
    __table_args__ = (
        Index("ix_billing_corrections_billed", "billed_period_start", "tenant_id"),
        Index("ix_billing_corrections_charged", "charge_period_start"),
    )

    billed_period_start: Mapped[datetime]
    """The (later) billing period that carries the correction."""
    tenant_id: Mapped[uuid.UUID]
    charge_period_start: Mapped[datetime]
    line: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The correction's charge line: key, descriptive fields, deltas as decimal strings."""


class DedicatedCapacity(IdMixin, CreatedMixin, Base):
    """GPUs held for one tenant, billed per GPU-hour whether busy or idle."""

    __tablename__ = "dedicated_capacity"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[uuid.UUID | None]
    """No foreign key: a deleted project's GPU hours stay charged back to it, by the name
    ``retired_projects`` keeps (as its token usage is), in closed months as billed."""
    flavor: Mapped[str] = mapped_column(String(64))
    region: Mapped[str] = mapped_column(String(64), default="")
    gpus: Mapped[int]
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime | None]
