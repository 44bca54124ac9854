"""an index for pages of a tenant's keys

``GET /tenants/{t}/keys`` is paged in (created_at, key_id) order: without this index each page
sorted every key of the tenant (40,000 in the scale probe) to return 100.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 22:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_api_keys_tenant_page", "api_keys", ["tenant_id", "created_at", "key_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_api_keys_tenant_page", table_name="api_keys")
