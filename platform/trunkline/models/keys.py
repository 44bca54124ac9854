"""API keys (gateway) and access tokens (control plane), stored as keyed hashes only."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, SmallInteger, String, text
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapped, mapped_column

from trunkline.kit.shards import key_shard
from trunkline.models.base import Base, CreatedMixin, IdMixin


def _shard_of_row(context: DefaultExecutionContext) -> int:
    row = context.get_current_parameters()  # type: ignore[no-untyped-call]
    return key_shard(row["key_id"])


class ApiKey(IdMixin, CreatedMixin, Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        # A page of a tenant's keys (``GET .../keys``, in this order) reads its rows alone,
        # instead of sorting every key of the tenant for each page.
        Index("ix_api_keys_tenant_page", "tenant_id", "created_at", "key_id"),
        # The keys that expired since the control plane last looked (their shards drop them).
        Index("ix_api_keys_expires_at", "expires_at"),
    )

    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    """The public part of the key, used for lookup; the secret part is never stored."""
    secret_hash: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    name: Mapped[str] = mapped_column(String(100))
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON)
    """Aliases this key may call; ``None`` means every alias the tenant is entitled to."""
    tier_name: Mapped[str | None] = mapped_column(String(32))
    """Pins the key to a lower tier than its tenant's."""
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    rotated_from: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    shard: Mapped[int] = mapped_column(
        SmallInteger, default=_shard_of_row, server_default=text("0"), index=True
    )
    """``key_shard(key_id)``: a change to a few keys rebuilds their snapshot shards, read by
    this column, not by reading every key. 0 for a row inserted without it (an older control
    plane during an upgrade, SQL by hand): shard 0 is always read with the others."""


class AccessToken(IdMixin, CreatedMixin, Base):
    __tablename__ = "access_tokens"

    token_id: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100), default="")
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class RetiredKey(Base):
    """A key deleted with its project: its name and creator, kept so the usage it made is
    still named by the usage API and shown to the developer who created it."""

    __tablename__ = "retired_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """The key's public id, as usage records and rollups name it."""
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    name: Mapped[str] = mapped_column(String(100))
    deleted_at: Mapped[datetime]
