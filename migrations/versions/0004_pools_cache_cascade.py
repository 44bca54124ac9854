"""pools as catalog objects, tenant cache isolation, cascading aliases

Pools gain their own cost per hour, capacity and nominal tokens/s; endpoints their
KV-event address; tenants a prefix-cache isolation flag (on for existing tenants);
aliases an optional pool list and an optional cascade (escalation model and checks).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 16:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.add_column(sa.Column("cost_per_hour", sa.Numeric(12, 4), nullable=True))
        batch.add_column(
            sa.Column("capacity", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch.add_column(sa.Column("tokens_per_s", sa.Double(), nullable=True))
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(sa.Column("kv_events", sa.String(500), nullable=True))
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column("cache_isolated", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
    with op.batch_alter_table("model_aliases") as batch:
        batch.add_column(sa.Column("pools", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("escalate_model_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("cascade_checks", sa.JSON(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_model_aliases_escalate_model_id_models"),
            "models",
            ["escalate_model_id"],
            ["id"],
            ondelete="RESTRICT",
        )


def downgrade() -> None:
    with op.batch_alter_table("model_aliases") as batch:
        batch.drop_constraint(op.f("fk_model_aliases_escalate_model_id_models"), type_="foreignkey")
        batch.drop_column("cascade_checks")
        batch.drop_column("escalate_model_id")
        batch.drop_column("pools")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("cache_isolated")
    with op.batch_alter_table("endpoints") as batch:
        batch.drop_column("kv_events")
    with op.batch_alter_table("pools") as batch:
        batch.drop_column("tokens_per_s")
        batch.drop_column("capacity")
        batch.drop_column("cost_per_hour")
