"""quotas: tier defaults, tenant overrides and API key overrides

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 14:22:26.271914
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import trunkline.models.base

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tier_quotas",
        sa.Column("tier_id", sa.Uuid(), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("updated_at", trunkline.models.base.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tier_id"], ["tiers.id"], name=op.f("fk_tier_quotas_tier_id_tiers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tier_id", name=op.f("pk_tier_quotas")),
    )
    op.create_table(
        "tenant_quotas",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("updated_at", trunkline.models.base.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_tenant_quotas_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_quotas")),
    )
    op.create_table(
        "api_key_quotas",
        sa.Column("api_key_id", sa.Uuid(), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("updated_at", trunkline.models.base.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_api_key_quotas_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("api_key_id", name=op.f("pk_api_key_quotas")),
    )


def downgrade() -> None:
    op.drop_table("api_key_quotas")
    op.drop_table("tenant_quotas")
    op.drop_table("tier_quotas")
