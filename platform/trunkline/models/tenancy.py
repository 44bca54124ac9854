"""Tiers, tenants, users, memberships and projects."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import JSON, Enum, ForeignKey, String, UniqueConstraint, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from trunkline.models.base import Base, CreatedMixin, IdMixin


class Role(enum.StrEnum):
    TENANT_ADMIN = "tenant_admin"
    DEVELOPER = "developer"


class Tier(IdMixin, CreatedMixin, Base):
    __tablename__ = "tiers"

    name: Mapped[str] = mapped_column(String(32), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    priority: Mapped[int]
    ttft_slo_ms: Mapped[int]
    itl_slo_ms: Mapped[int | None]
    may_use_burst: Mapped[bool] = mapped_column(default=False)


class Tenant(IdMixin, CreatedMixin, Base):
    __tablename__ = "tenants"

    slug: Mapped[str] = mapped_column(String(63), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    tier_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tiers.id"))
    regions: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Regions the tenant's requests may be served in; empty means anywhere."""
    cache_isolated: Mapped[bool] = mapped_column(default=True, server_default=true())
    """Salt the tenant's prompts in the engines' prefix cache, so no other tenant shares it."""

    tier: Mapped[Tier] = relationship(lazy="joined")


class User(IdMixin, CreatedMixin, Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    is_platform_admin: Mapped[bool] = mapped_column(default=False)


class Membership(IdMixin, CreatedMixin, Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "tenant_id"),)

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=32))


class Project(IdMixin, CreatedMixin, Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(500), default="")


class RetiredProject(Base):
    """A deleted project's name, kept so the usage it had is still charged back under it
    (FOCUS ``SubAccountName``) in periods not closed yet; closed periods keep their own."""

    __tablename__ = "retired_projects"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    """The project's id, as usage records and rollups name it."""
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    deleted_at: Mapped[datetime]
