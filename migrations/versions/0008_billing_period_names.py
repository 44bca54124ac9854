"""closed billing periods keep the names they were billed under

The tenant slugs and names and project names as they were when a period closed, so a closed
period's export reads the same for ever even after a tenant is renamed or a project deleted.
Periods closed before this revision keep null and are named as things are now.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 05:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("billing_periods") as batch:
        batch.add_column(sa.Column("names", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("billing_periods") as batch:
        batch.drop_column("names")
