"""dedicated capacity keeps the project it was held for after the project is deleted

``dedicated_capacity.project_id`` referenced ``projects`` with ``ON DELETE SET NULL``: deleting
a project took its GPU hours out of it, in the open month and in every closed month's final
export alike (``SubAccountId`` and ``SubAccountName`` emptied, ``ResourceId`` changed), where
its token usage stays charged back under its name (``retired_projects``). The id now stays,
as it does in the rollups, and the bill names it from ``retired_projects``.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 21:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FOREIGN_KEY = "fk_dedicated_capacity_project_id_projects"


def upgrade() -> None:
    with op.batch_alter_table("dedicated_capacity") as batch:
        batch.drop_constraint(_FOREIGN_KEY, type_="foreignkey")


def downgrade() -> None:
    # A project deleted meanwhile no longer exists to refer to: its capacity loses its project,
    # as the foreign key did before.
    op.execute(
        "UPDATE dedicated_capacity SET project_id = NULL WHERE project_id IS NOT NULL "
        "AND project_id NOT IN (SELECT id FROM projects)"
    )
    with op.batch_alter_table("dedicated_capacity") as batch:
        batch.create_foreign_key(
            _FOREIGN_KEY, "projects", ["project_id"], ["id"], ondelete="SET NULL"
        )
