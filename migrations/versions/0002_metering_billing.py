"""metering and billing: rollups with watermarks, price book, billing periods, corrections,
dedicated capacity

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 14:14:20.830995
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import trunkline.models.base

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "billed_usage",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("hour", trunkline.models.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("api_key_id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("pool", sa.String(length=100), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("accelerator", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("slo_eligible", sa.BigInteger(), nullable=False),
        sa.Column("slo_met", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "hour",
            "project_id",
            "api_key_id",
            "model",
            "pool",
            "tier",
            "region",
            "accelerator",
            "outcome",
            name=op.f("pk_billed_usage"),
        ),
    )
    op.create_index("ix_billed_usage_hour", "billed_usage", ["hour"], unique=False)
    op.create_table(
        "billing_corrections",
        sa.Column(
            "billed_period_start", trunkline.models.base.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column(
            "charge_period_start", trunkline.models.base.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column("line", sa.JSON(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", trunkline.models.base.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_corrections")),
    )
    op.create_index(
        "ix_billing_corrections_billed",
        "billing_corrections",
        ["billed_period_start", "tenant_id"],
        unique=False,
    )
    op.create_index(
        "ix_billing_corrections_charged",
        "billing_corrections",
        ["charge_period_start"],
        unique=False,
    )
    op.create_table(
        "billing_periods",
        sa.Column("period_start", trunkline.models.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("period_end", trunkline.models.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", trunkline.models.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column(
            "reconciled_at", trunkline.models.base.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column("reconciled_rows", sa.BigInteger(), nullable=False),
        sa.Column("reconciled_revisions", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("period_start", name=op.f("pk_billing_periods")),
    )
    op.create_table(
        "price_book_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column(
            "effective_from", trunkline.models.base.UtcDateTime(timezone=True), nullable=False
        ),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", trunkline.models.base.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_price_book_versions")),
        sa.UniqueConstraint("effective_from", name=op.f("uq_price_book_versions_effective_from")),
    )
    op.create_table(
        "usage_rollup_watermarks",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("hour", trunkline.models.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("changed_seq", sa.BigInteger(), nullable=False),
        sa.Column("rolled_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "hour", name=op.f("pk_usage_rollup_watermarks")),
    )
    op.create_index(
        "ix_usage_rollup_watermarks_pending",
        "usage_rollup_watermarks",
        ["hour"],
        unique=False,
        postgresql_where=sa.text("changed_seq > rolled_seq"),
        sqlite_where=sa.text("changed_seq > rolled_seq"),
    )
    op.create_table(
        "usage_rollups",
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("updated_at", trunkline.models.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("hour", trunkline.models.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("api_key_id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("pool", sa.String(length=100), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("accelerator", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("slo_eligible", sa.BigInteger(), nullable=False),
        sa.Column("slo_met", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "hour",
            "project_id",
            "api_key_id",
            "model",
            "pool",
            "tier",
            "region",
            "accelerator",
            "outcome",
            name=op.f("pk_usage_rollups"),
        ),
    )
    op.create_index("ix_usage_rollups_hour", "usage_rollups", ["hour"], unique=False)
    op.create_table(
        "dedicated_capacity",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=True),
        sa.Column("flavor", sa.String(length=64), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("starts_at", trunkline.models.base.UtcDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", trunkline.models.base.UtcDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", trunkline.models.base.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_dedicated_capacity_project_id_projects"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_dedicated_capacity_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dedicated_capacity")),
    )
    op.create_index(
        op.f("ix_dedicated_capacity_tenant_id"), "dedicated_capacity", ["tenant_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_dedicated_capacity_tenant_id"), table_name="dedicated_capacity")
    op.drop_table("dedicated_capacity")
    op.drop_index("ix_usage_rollups_hour", table_name="usage_rollups")
    op.drop_table("usage_rollups")
    op.drop_index("ix_usage_rollup_watermarks_pending", table_name="usage_rollup_watermarks")
    op.drop_table("usage_rollup_watermarks")
    op.drop_table("price_book_versions")
    op.drop_table("billing_periods")
    op.drop_index("ix_billing_corrections_charged", table_name="billing_corrections")
    op.drop_index("ix_billing_corrections_billed", table_name="billing_corrections")
    op.drop_table("billing_corrections")
    op.drop_index("ix_billed_usage_hour", table_name="billed_usage")
    op.drop_table("billed_usage")
