"""what each recent change to the gateways' configuration was

With two control planes taking key changes, each found the other's latest change committed
but not yet in the snapshot store at nearly every write, and built the whole snapshot (about
0.5 s at 19,000 keys) rather than patch its keys' shards over a change that might have been a
tenant's or a tier's; the other's next patch then refused that build. Every change now records
in its transaction whether it changed keys only, and the key shards it changed: a key change may
be patched over such a gap, and a check that finds one still missing patches its shards in.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 09:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "config_changes",
        sa.Column("generation", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("keys_only", sa.Boolean(), nullable=False),
        sa.Column("shards", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("generation", name=op.f("pk_config_changes")),
    )


def downgrade() -> None:
    op.drop_table("config_changes")
