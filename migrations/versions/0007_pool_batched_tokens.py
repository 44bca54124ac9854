"""pools gain their engines' max_num_batched_tokens

vLLM's ``--max-num-batched-tokens`` of a pool's engines (null: the flavor's default), so the
gateway's TTFT predictor knows the prefill chunk a pool was deployed with: a smaller chunk keeps
decode steps short (placement's lever) and leaves less of each step to prefill.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 03:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.add_column(sa.Column("max_num_batched_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.drop_column("max_num_batched_tokens")
