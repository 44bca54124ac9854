"""Models, public aliases, tenant entitlements, accelerator flavors, pools and endpoints."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Numeric, String, UniqueConstraint, text
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
    """The model that answers (for a cascade: the small one, tried first)."""
    pools: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    """Pools the alias may use; ``None``: every pool serving its model."""
    escalate_model_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("models.id", ondelete="RESTRICT"), default=None
    )
    """For a cascading alias: the large model asked when a check on the first answer fails."""
    cascade_checks: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """For a cascading alias: the checks on the first answer (``trunkline.gateway.cascade``)."""


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
    """Scales to zero between peaks."""
    block_size: Mapped[int] = mapped_column(default=16)
    cost_per_hour: Mapped[Decimal | None] = mapped_column(Numeric(12, 4), default=None)
    """Price of one replica per hour; ``None``: the flavor's."""
    capacity: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    """Replicas the pool may run; 0: as many as it has endpoints."""
    tokens_per_s: Mapped[float | None] = mapped_column(default=None)
    """Nominal output tokens/s of one replica, for cost per token."""
    min_prompt_tokens: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    max_prompt_tokens: Mapped[int | None] = mapped_column(default=None)
    """Placement by prompt length: the pool is for prompts of ``min_prompt_tokens`` up to, not
    including, ``max_prompt_tokens`` (None: no limit)."""
    tiers: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    """Placement by tier: the only tiers whose requests may use the pool (None: every tier)."""
    max_num_batched_tokens: Mapped[int | None] = mapped_column(default=None)
    """The engines' vLLM ``--max-num-batched-tokens`` (None: the flavor's default)."""


class Endpoint(IdMixin, CreatedMixin, Base):
    __tablename__ = "endpoints"
    __table_args__ = (UniqueConstraint("pool_id", "url"),)

    pool_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("pools.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(500))
    enabled: Mapped[bool] = mapped_column(default=True)
    kv_events: Mapped[str | None] = mapped_column(String(500), default=None)
    """ZMQ address of the engine's KV-cache event publisher (``tcp://host:port``)."""
    kv_replay: Mapped[str | None] = mapped_column(String(500), default=None)
    """ZMQ address where that publisher replays missed events (vLLM's ``replay_endpoint``)."""
