"""keys deleted with their project keep their names and creators for the usage API

Deleting a project deletes its keys; the usage API found the keys a developer created, and
the keys' names, among the keys left, so a developer's usage of those keys vanished from their
view (this month's and every month's before) and usage by key named them by id alone.
``retired_keys`` keeps each key deleted with its project from here on.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 19:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from trunkline.models.base import UtcDateTime

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "retired_keys",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("deleted_at", UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_retired_keys_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_retired_keys_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_retired_keys")),
    )
    op.create_index(op.f("ix_retired_keys_tenant_id"), "retired_keys", ["tenant_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_retired_keys_tenant_id"), table_name="retired_keys")
    op.drop_table("retired_keys")
