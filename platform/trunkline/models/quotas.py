"""Quota documents: tier defaults, tenant overrides and key overrides (``quota.schemas``).

One JSON document per tier, tenant or API key, deleted with its owner. The documents hold only
what was set (an omitted limit is inherited, ``null`` means unlimited); ``quota.policy``
resolves them into the limits the snapshot carries.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from trunkline.models.base import Base, _now


class TierQuota(Base):
    __tablename__ = "tier_quotas"

    tier_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tiers.id", ondelete="CASCADE"), primary_key=True
    )
    limits: Mapped[dict[str, Any]] = mapped_column(JSON)
    """Defaults per scope: ``{"tenant": {...}, "project": {...}, "key": {...}}``."""
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class TenantQuota(Base):
    __tablename__ = "tenant_quotas"

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )
    limits: Mapped[dict[str, Any]] = mapped_column(JSON)
    """Overrides of the tier's defaults, per scope, for this tenant and its projects and keys."""
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class KeyQuota(Base):
    __tablename__ = "api_key_quotas"

    api_key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    limits: Mapped[dict[str, Any]] = mapped_column(JSON)
    """Overrides of the key scope's limits for this key (a rotated key keeps its ancestor's)."""
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)
