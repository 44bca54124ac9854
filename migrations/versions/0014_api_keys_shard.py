"""the snapshot shard of each API key, and an index on key expiry

A change to a few keys (one created, revoked, expired) rebuilt the gateways' whole snapshot:
0.5-0.8 s at 40,000 keys. The control plane now rebuilds only the shards those keys are in,
reading a shard's keys by this column, and finds the keys that expired since it last looked
by ``expires_at``.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 00:10:00.000000
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SHARDS = 64
"""``trunkline.kit.shards``, frozen here: what this migration writes must not change."""


def upgrade() -> None:
    # Added NOT NULL with a default, then filled in: making a column NOT NULL afterwards
    # recreates the table on SQLite, whose DROP TABLE (foreign keys on) deletes every key's
    # quota document by cascade. The default stays: a control plane of the version before,
    # still running during the upgrade, inserts keys without a shard, and shard 0 is read
    # with every other (``snapshot.key_shards``).
    op.add_column(
        "api_keys",
        sa.Column("shard", sa.SmallInteger(), nullable=False, server_default=sa.text("0")),
    )
    keys = sa.table("api_keys", sa.column("id"), sa.column("key_id"), sa.column("shard"))
    bind = op.get_bind()
    rows = bind.execute(sa.select(keys.c.id, keys.c.key_id)).all()
    if rows:
        bind.execute(
            keys.update().where(keys.c.id == sa.bindparam("row")).values(shard=sa.bindparam("n")),
            [{"row": row, "n": zlib.crc32(key_id.encode()) % _SHARDS} for row, key_id in rows],
        )
    op.create_index("ix_api_keys_shard", "api_keys", ["shard"], unique=False)
    op.create_index("ix_api_keys_expires_at", "api_keys", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_api_keys_expires_at", table_name="api_keys")
    op.drop_index("ix_api_keys_shard", table_name="api_keys")
    op.drop_column("api_keys", "shard")  # SQLite's own DROP COLUMN: no table recreated
