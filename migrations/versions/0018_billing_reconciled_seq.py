"""a closed billing period's watermark counts every rollup of its hours

A closed period's rollups were judged moved (and its corrections billed) by their row count
and summed revisions. An event corrected by hand (recorded as failed, answered after all) and
its hour rolled again deleted its row (revision 1) and inserted another (revision 1): neither
moved, and the correction was never billed. ``reconciled_seq`` keeps the summed ``rolled_seq``
of the period's tenant-hours, which every rollup of an hour moves; closed periods get the
value they have now (what they were reconciled at, unless a rollup moved them since, which
the count and revisions still show for any change but such a swap). Its hours are summed
through a new index on the watermarks' hour.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 21:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from trunkline.models.base import UtcDateTime

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_usage_rollup_watermarks_hour", "usage_rollup_watermarks", ["hour"], unique=False
    )
    with op.batch_alter_table("billing_periods") as batch:
        batch.add_column(sa.Column("reconciled_seq", sa.BigInteger(), nullable=True))
    periods = sa.table(
        "billing_periods",
        sa.column("period_start", UtcDateTime(timezone=True)),
        sa.column("period_end", UtcDateTime(timezone=True)),
        sa.column("reconciled_seq", sa.BigInteger()),
    )
    watermarks = sa.table(
        "usage_rollup_watermarks",
        sa.column("hour", UtcDateTime(timezone=True)),
        sa.column("rolled_seq", sa.BigInteger()),
    )
    rolled = (
        sa.select(sa.func.coalesce(sa.func.sum(watermarks.c.rolled_seq), 0))
        .where(
            watermarks.c.hour >= periods.c.period_start, watermarks.c.hour < periods.c.period_end
        )
        .scalar_subquery()
    )
    op.execute(periods.update().values(reconciled_seq=rolled))


def downgrade() -> None:
    with op.batch_alter_table("billing_periods") as batch:
        batch.drop_column("reconciled_seq")
    op.drop_index("ix_usage_rollup_watermarks_hour", table_name="usage_rollup_watermarks")
