"""usage events keep the TTFT SLO they were served under

SLA attainment was judged against the tier's SLO at rollup time: changing a tier's SLO, then
rolling an hour up again for a late event, rewrote that hour's attainment, and the SLA credit
of its period. Each event now records the SLO in force when it was served; events from before
keep NULL and are judged by the tier's SLO at rollup time, as before.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 17:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.add_column(sa.Column("ttft_slo_ms", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_events") as batch:
        batch.drop_column("ttft_slo_ms")
