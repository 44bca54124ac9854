"""placement by prompt length: pools gain a prompt-length range

A pool may be placed for prompts of ``min_prompt_tokens`` up to, not including,
``max_prompt_tokens`` (null: no limit); the ``prompt-length`` routing filter prefers it for
them. Existing pools take any length (0, null).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 22:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.add_column(
            sa.Column(
                "min_prompt_tokens", sa.Integer(), server_default=sa.text("0"), nullable=False
            )
        )
        batch.add_column(sa.Column("max_prompt_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.drop_column("max_prompt_tokens")
        batch.drop_column("min_prompt_tokens")
