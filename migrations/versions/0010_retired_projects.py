"""deleted projects keep their names for chargeback

A project's usage is charged back under its name (FOCUS ``SubAccountName``); deleting the project
mid-period left its usage named by its id alone, in every export of the period and in the
closed period's names. ``retired_projects`` keeps the name of each project deleted from here on.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 14:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from trunkline.models.base import UtcDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "retired_projects",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("deleted_at", UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_retired_projects_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retired_projects")),
    )
    op.create_index(
        op.f("ix_retired_projects_tenant_id"), "retired_projects", ["tenant_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_retired_projects_tenant_id"), table_name="retired_projects")
    op.drop_table("retired_projects")
