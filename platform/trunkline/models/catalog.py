"""Models, public aliases, tenant entitlements, accelerator flavors, pools and endpoints."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import ForeignKey, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from trunkline.models.base import Base, CreatedMixin, IdMixin


class Model(IdMixin, CreatedMixin, Base):
    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(200), unique=True)
    """The name engines serve it under (vLLM ``--served-model-name``)."""
    kind: Mapped[str] = mapped_column(String(16), default="chat")
    context_length: Mapped[int] = mapped_column(default=8192)
    params_b: Mapped[float | None]


class ModelAlias(IdMixin, CreatedMixin, Base):
    __tablename__ = "model_aliases"

    alias: Mapped[str] = mapped_column(String(200), unique=True)
    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))


class Entitlement(IdMixin, CreatedMixin, Base):
    __tablename__ = "entitlements"
    __table_args__ = (UniqueConstraint("tenant_id", "alias_id"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    alias_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("model_aliases.id", ondelete="CASCADE"))


class AcceleratorFlavor(IdMixin, CreatedMixin, Base):
    __tablename__ = "accelerator_flavors"

    name: Mapped[str] = mapped_column(String(64), unique=True)
    vendor: Mapped[str] = mapped_column(String(64), default="")
    memory_gb: Mapped[int] = mapped_column(default=0)
    cost_per_hour: Mapped[Decimal] = mapped_column(Numeric(12, 4), default=Decimal(0))


class Pool(IdMixin, CreatedMixin, Base):
    __tablename__ = "pools"

    name: Mapped[str] = mapped_column(String(100), unique=True)
    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("models.id"))
    flavor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accelerator_flavors.id"))
    region: Mapped[str] = mapped_column(String(64))
    burst: Mapped[bool] = mapped_column(default=False)
    block_size: Mapped[int] = mapped_column(default=16)


class Endpoint(IdMixin, CreatedMixin, Base):
    __tablename__ = "endpoints"
    __table_args__ = (UniqueConstraint("pool_id", "url"),)

    pool_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("pools.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(500))
    enabled: Mapped[bool] = mapped_column(default=True)
