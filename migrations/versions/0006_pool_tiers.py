"""placement by tier: pools gain the tiers that may use them

A pool may name the only tiers whose requests are routed to it (e.g. an H100 pool kept for
gold); null, as every existing pool, means every tier. The ``tier-pools`` routing filter and
the gateway's candidate list enforce it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 03:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.add_column(sa.Column("tiers", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.drop_column("tiers")
