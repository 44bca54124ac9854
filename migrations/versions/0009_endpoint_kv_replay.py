"""endpoints gain the address where their engine replays KV-cache events

vLLM's ``--kv-events-config`` ``replay_endpoint`` (a ZMQ ROUTER address; null: none): the gateway
asks it for the events it missed, those sent before it subscribed and those lost in a gap,
instead of starting blind or clearing what it knew of the endpoint.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(sa.Column("kv_replay", sa.String(500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.drop_column("kv_replay")
