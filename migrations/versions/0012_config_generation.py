"""a generation counter of the gateways' configuration

The control plane checked every 2 s that the snapshot store held the database's configuration
by building the whole snapshot: a second of CPU at 4,000 tenants and 40,000 keys, back to back.
Every commit that changes the configuration now bumps this counter in its own transaction, and
the check builds only when it moved.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 19:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "config_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_config_generation")),
    )
    op.bulk_insert(table, [{"id": 1, "generation": 0}])


def downgrade() -> None:
    op.drop_table("config_generation")
